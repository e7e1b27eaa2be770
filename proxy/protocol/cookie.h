// Reading the Cookie request field (RFC 6265 §4.2.1, "a=1; b=2"), pure. One
// parser for every feature that reads a cookie: session keys
// (`hash = "cookie:NAME"`), sticky cookies and tokens (`token_from =
// "cookie:NAME"`). Every returned view points into the field value.
#pragma once

#include <optional>
#include <string_view>

#include "protocol/http1.h"

namespace cookie {

// The value of cookie <name> in one Cookie field value. Parsed leniently,
// as browsers send it: whitespace around names and values is ignored, pairs
// without '=' are skipped, names compare case-sensitively (§5.4), and a
// DQUOTE'd value loses its quotes (cookie-value = *cookie-octet / ( DQUOTE
// *cookie-octet DQUOTE ), §4.1.1). The first match wins; nullopt when the
// cookie is not there ("name=" gives an empty value, not nullopt).
std::optional<std::string_view> find(std::string_view field, std::string_view name);

// The same over every Cookie field of <request> (HTTP/1.1 clients may send
// several): the first field holding <name> decides.
std::optional<std::string_view> find(const http1::RequestHead& request, std::string_view name);

}  // namespace cookie
