// The decode phase: TOML text -> positioned tree (config_toml.cpp, the only
// user of toml++). Syntax error texts are toml++ 3.3's own and pinned here, so
// a library upgrade that changes what operators see is noticed.
#include <doctest/doctest.h>

#include <string>

#include "config/config_toml.h"

namespace {

using config::toml_doc::Kind;
using config::toml_doc::Node;

Node parsed(std::string_view text) {
    auto result = config::toml_doc::parse_toml(text, "d.toml");
    if (const auto* error = std::get_if<config::Error>(&result)) FAIL(error->to_string());
    return std::get<Node>(result);
}

}  // namespace

TEST_CASE("config_toml: kinds, values and positions") {
    const Node root = parsed(R"(top = "s"
[t]
i = -42
f = 1.5
b = true
d = 1979-05-27
tm = 07:32:00
dt = 1979-05-27T07:32:00Z
a = [1, "x"]
)");
    CHECK(root.kind == Kind::Table);
    CHECK(root.position.line == 1);
    CHECK(root.position.column == 1);
    REQUIRE(root.entries.size() == 2);
    CHECK(root.entries[0].key == "top");
    CHECK(root.entries[0].value.kind == Kind::String);
    CHECK(root.entries[0].value.string == "s");
    CHECK(root.entries[0].value.position.line == 1);
    CHECK(root.entries[0].value.position.column == 7);

    const Node* t = root.find("t");
    REQUIRE(t != nullptr);
    CHECK(t->kind == Kind::Table);
    CHECK(t->position.line == 2);
    CHECK(root.entries[1].key_position.line == 2);
    CHECK(root.entries[1].key_position.column == 2);
    CHECK(t->find("i")->kind == Kind::Integer);
    CHECK(t->find("i")->integer == -42);
    CHECK(t->find("i")->position.line == 3);
    CHECK(t->find("i")->position.column == 5);
    CHECK(t->find("f")->kind == Kind::Float);
    CHECK(t->find("f")->floating == 1.5);
    CHECK(t->find("b")->kind == Kind::Boolean);
    CHECK(t->find("b")->boolean);
    CHECK(t->find("d")->kind == Kind::Date);
    CHECK(t->find("tm")->kind == Kind::Time);
    CHECK(t->find("dt")->kind == Kind::DateTime);
    const Node* a = t->find("a");
    REQUIRE(a != nullptr);
    CHECK(a->kind == Kind::Array);
    REQUIRE(a->items.size() == 2);
    CHECK(a->items[0].integer == 1);
    CHECK(a->items[1].string == "x");
    CHECK(a->items[1].position.column == 9);
    CHECK(t->find("nope") == nullptr);
    CHECK(root.find("i") == nullptr);
}

TEST_CASE("config_toml: table entries keep file order, not key order") {
    const Node root = parsed("zeta = 1\nalpha = 2\nmid = 3\n");
    REQUIRE(root.entries.size() == 3);
    CHECK(root.entries[0].key == "zeta");
    CHECK(root.entries[1].key == "alpha");
    CHECK(root.entries[2].key == "mid");
}

TEST_CASE("config_toml: arrays of tables point at their headers") {
    const Node root = parsed("[[p]]\nn = 1\n\n[[p]]\nn = 2\n  [[p.b]]\n  x = 1\n");
    const Node* p = root.find("p");
    REQUIRE(p != nullptr);
    REQUIRE(p->kind == Kind::Array);
    REQUIRE(p->items.size() == 2);
    CHECK(p->items[0].position.line == 1);
    CHECK(p->items[1].position.line == 4);
    const Node* b = p->items[1].find("b");
    REQUIRE(b != nullptr);
    REQUIRE(b->items.size() == 1);
    CHECK(b->items[0].position.line == 6);
    CHECK(b->items[0].position.column == 3);
    CHECK(b->items[0].find("x")->position.line == 7);
}

TEST_CASE("config_toml: a syntax error is one positioned error") {
    struct Case {
        std::string_view text;
        std::string_view expected;
    };
    const Case cases[] = {
        {"a = \n", "d.toml:1:5: Error while parsing key-value pair: expected value, saw '\\n'"},
        {"a = 1\na = 2\n", "d.toml:2:5: Error while parsing key-value pair: cannot redefine existing integer 'a'"},
        {"[t]\n[t]\n", "d.toml:2:1: Error while parsing table header: cannot redefine existing table 't'"},
        {"a = \"x\ny\"\n",
         "d.toml:1:7: Error while parsing string: unescaped control characters other than TAB (U+0009) are "
         "explicitly prohibited"},
        {std::string_view("a = \"x\0\"\n", 9),
         "d.toml:1:7: Error while parsing string: unescaped control characters other than TAB (U+0009) are "
         "explicitly prohibited"},
        {"a = 99999999999999999999\n",
         "d.toml:1:25: Error while parsing decimal integer: '99999999999999999999' is not representable in 64 bits"},
    };
    for (const Case& c : cases) {
        CAPTURE(c.text);
        auto result = config::toml_doc::parse_toml(c.text, "d.toml");
        REQUIRE(std::holds_alternative<config::Error>(result));
        CHECK(std::get<config::Error>(result).to_string() == c.expected);
    }
}

TEST_CASE("config_toml: describe") {
    CHECK(config::toml_doc::describe(Kind::Table) == "a table");
    CHECK(config::toml_doc::describe(Kind::Array) == "an array");
    CHECK(config::toml_doc::describe(Kind::String) == "a string");
    CHECK(config::toml_doc::describe(Kind::Integer) == "an integer");
    CHECK(config::toml_doc::describe(Kind::Float) == "a float");
    CHECK(config::toml_doc::describe(Kind::Boolean) == "a boolean");
    CHECK(config::toml_doc::describe(Kind::Date) == "a date");
    CHECK(config::toml_doc::describe(Kind::Time) == "a time");
    CHECK(config::toml_doc::describe(Kind::DateTime) == "a date-time");
}
