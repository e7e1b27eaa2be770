// Cookie stickiness, pure: a pool with `sticky_cookie = "NAME"` names the back
// end a client was given in a cookie, and later requests carrying it go back
// there while it is eligible. The cookie value is an opaque token derived from
// the pool name and the back end's id: it reveals no address, and it is
// checked by looking it up among the pool's tokens, never decoded.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "protocol/http1.h"

namespace sticky {

// 16 lowercase hex digits of chash::hash_bytes(<pool> NUL <backend_id>):
// the same in every process, so that several proxies agree.
std::string token(std::string_view pool, std::string_view backend_id);

// The index in <tokens> of <value>, or chash::kNone.
std::size_t find(std::span<const std::string> tokens, std::string_view value);

// The value of cookie <name> in <request> (first occurrence), or "" when absent.
std::string_view cookie_value(const http1::RequestHead& request, std::string_view name);

// "NAME=TOKEN; Path=/; HttpOnly; SameSite=Lax" (RFC 6265 §4.1): for every
// path, hidden from scripts, not sent on cross-site subrequests.
std::string set_cookie(std::string_view name, std::string_view token);

// A cookie-name is a token (RFC 6265 §4.1.1, RFC 9110 §5.6.2).
bool valid_cookie_name(std::string_view name);

}  // namespace sticky
