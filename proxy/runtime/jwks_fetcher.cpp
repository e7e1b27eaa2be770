#include "runtime/jwks_fetcher.h"

#include <chrono>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/http.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>

#include "auth/key_source.h"
#include "net/tls.h"

namespace runtime {

namespace {

// Unknown-kid requests are noticed within this: a handshake held for the
// refetch waits for it (plus the fetch itself).
constexpr int kTickMs = 50;
constexpr std::uint64_t kFileCheckTicks = 20;  // jwks_file stamps every second
constexpr int kFetchTimeoutSeconds = 10;
constexpr std::int64_t kErrorLogIntervalMs = 60 * 1000;
constexpr std::size_t kMaxBodyBytes = 1 << 20;

}  // namespace

bool fetch_due(FetchSchedule& schedule, std::int64_t now_ms, bool kid_requested) {
    if (kid_requested) schedule.kid_fetch_pending = true;
    if (schedule.kid_fetch_pending && now_ms - schedule.last_kid_fetch_ms >= jwks::kUnknownKidFloorMs) {
        schedule.kid_fetch_pending = false;
        schedule.last_kid_fetch_ms = now_ms;
        return true;
    }
    return now_ms >= schedule.next_periodic_ms;
}

struct JwksFetcher::Job {
    JwksFetcher* owner = nullptr;
    std::shared_ptr<jwks::Source> source;
    FetchSchedule schedule;
    evhttp_connection* connection = nullptr;  // while a fetch is in flight, and until the next tick frees it
    bool in_flight = false;
    bool retired = false;
    std::int64_t last_error_log_ms = INT64_MIN / 2;
    std::uint64_t suppressed_errors = 0;
};

JwksFetcher::JwksFetcher(event_base* base, obs::ErrorLog& log, obs::AuthMetrics& metrics)
    : base_(base), log_(log), metrics_(metrics) {
    tick_ = event_new(base_, -1, EV_PERSIST, &JwksFetcher::on_tick, this);
}

JwksFetcher::~JwksFetcher() {
    if (tick_) event_free(tick_);
    // Freeing a connection drops its pending request without calling back.
    for (auto* list : {&jobs_, &retired_}) {
        for (auto& job : *list) {
            if (job->connection) evhttp_connection_free(job->connection);
            job->connection = nullptr;
        }
    }
    if (dns_) evdns_base_free(dns_, 0);
}

std::int64_t JwksFetcher::now_ms() const {
    using namespace std::chrono;
    return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

void JwksFetcher::configure(const std::shared_ptr<const Generation>& generation) {
    std::vector<std::shared_ptr<Job>> next;
    const std::int64_t now = now_ms();
    for (const config::Route& route : generation->config().routes) {
        if (!route.auth || !route.auth->keys) continue;
        auto job = std::make_shared<Job>();
        job->owner = this;
        job->source = route.auth->keys;
        const jwks::Source::Origin& origin = job->source->origin();
        job->schedule.next_periodic_ms = now;
        if (!origin.url.empty()) {
            for (auto& old : jobs_) {
                const jwks::Source::Origin& was = old->source->origin();
                if (was.url != origin.url || was.route != origin.route) continue;
                if (auto set = old->source->current()) job->source->publish(set);
                job->schedule = old->schedule;
                job->source->set_kid_floor(job->schedule.last_kid_fetch_ms + jwks::kUnknownKidFloorMs);
                job->last_error_log_ms = old->last_error_log_ms;
                if (old->in_flight) job->schedule.next_periodic_ms = now;  // its answer goes to the old source
            }
        }
        if (auto set = job->source->current()) metrics_.jwks_keys(origin.route, set->keys.size());
        next.push_back(std::move(job));
    }
    for (auto& old : jobs_) {
        if (old->in_flight) {
            old->retired = true;
            retired_.push_back(old);
        } else if (old->connection) {
            evhttp_connection_free(old->connection);
            old->connection = nullptr;
        }
    }
    jobs_ = std::move(next);
    if (jobs_.empty()) {
        event_del(tick_);
    } else if (!event_pending(tick_, EV_TIMEOUT, nullptr)) {
        timeval interval{0, kTickMs * 1000};
        event_add(tick_, &interval);
    }
    tick();
}

void JwksFetcher::on_tick(evutil_socket_t, short, void* self) { static_cast<JwksFetcher*>(self)->tick(); }

void JwksFetcher::tick() {
    ++ticks_;
    const std::int64_t now = now_ms();
    // Connections of finished fetches are freed here, outside their own
    // callbacks (evhttp must not free a connection from its request callback).
    for (auto& job : jobs_) {
        if (!job->in_flight && job->connection) {
            evhttp_connection_free(job->connection);
            job->connection = nullptr;
        }
    }
    std::erase_if(retired_, [](const std::shared_ptr<Job>& job) {
        if (job->in_flight) return false;
        if (job->connection) evhttp_connection_free(job->connection);
        return true;
    });
    for (auto& job : jobs_) {
        if (!job->source->origin().file.empty()) {
            if (ticks_ % kFileCheckTicks == 0) check_file(*job);
            continue;
        }
        if (job->in_flight) continue;
        if (fetch_due(job->schedule, now, job->source->take_refetch_request())) start_fetch(*job);
    }
}

void JwksFetcher::check_file(Job& job) {
    const std::string& path = job.source->origin().file;
    auto stamp = jwks::stamp_of(path);
    if (stamp && *stamp == job.source->stamp) return;
    auto loaded = jwks::load_file(path);
    if (auto* problem = std::get_if<std::string>(&loaded)) {
        // Mid-replace or broken: keep the set; retried at every check until
        // the stamp stops changing to something unreadable.
        if (stamp) job.source->stamp = *stamp;
        fetch_failed(job, *problem);
        return;
    }
    auto& file = std::get<jwks::LoadedFile>(loaded);
    job.source->stamp = file.stamp;
    publish(job, std::make_shared<const jwks::KeySet>(std::move(file.set)), "re-read");
}

void JwksFetcher::start_fetch(Job& job) {
    const jwks::Source::Origin& origin = job.source->origin();
    const jwks::HttpsUrl& url = origin.https;
    job.schedule.next_periodic_ms = now_ms() + origin.refresh_ms;
    // Before anything can fail: fetch_failed() and publish() end it.
    job.source->fetch_started(job.schedule.last_kid_fetch_ms + jwks::kUnknownKidFloorMs);
    SSL* ssl = origin.tls->new_ssl(url.host);
    if (ssl == nullptr) {
        fetch_failed(job, "cannot create a TLS session");
        return;
    }
    bufferevent* bev = bufferevent_openssl_socket_new(base_, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                      BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (bev == nullptr) {
        SSL_free(ssl);
        fetch_failed(job, "out of memory");
        return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    // Host names resolve through evdns, never a blocking getaddrinfo.
    const bool numeric = url.host.find_first_not_of("0123456789.") == std::string::npos || url.host.find(':') != std::string::npos;
    if (!numeric && dns_ == nullptr) dns_ = evdns_base_new(base_, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    job.connection = evhttp_connection_base_bufferevent_new(base_, numeric ? nullptr : dns_, bev, url.host.c_str(), url.port);
    if (job.connection == nullptr) {
        bufferevent_free(bev);
        fetch_failed(job, "cannot create an HTTP connection");
        return;
    }
    evhttp_connection_set_timeout(job.connection, kFetchTimeoutSeconds);
    evhttp_connection_set_retries(job.connection, 0);
    evhttp_connection_set_max_body_size(job.connection, kMaxBodyBytes);
    evhttp_request* request = evhttp_request_new(&JwksFetcher::on_response, &job);
    evkeyvalq* headers = evhttp_request_get_output_headers(request);
    const std::string host = (url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host) +
                             (url.port == 443 ? "" : ":" + std::to_string(url.port));
    evhttp_add_header(headers, "Host", host.c_str());
    evhttp_add_header(headers, "Accept", "application/jwk-set+json, application/json");
    evhttp_add_header(headers, "User-Agent", "wsgate");
    evhttp_add_header(headers, "Connection", "close");
    job.in_flight = true;
    if (evhttp_make_request(job.connection, request, EVHTTP_REQ_GET, url.path_and_query.c_str()) != 0) {
        // evhttp frees the request on failure.
        job.in_flight = false;
        fetch_failed(job, "cannot send the request");
    }
}

void JwksFetcher::on_response(evhttp_request* request, void* arg) {
    auto* job = static_cast<Job*>(arg);
    job->in_flight = false;
    if (job->retired) {  // a reload replaced the route: its answer goes nowhere
        job->source->fetch_finished();  // handshakes held on the old route stop waiting
        return;
    }
    job->owner->finish_fetch(*job, request);
}

void JwksFetcher::finish_fetch(Job& job, evhttp_request* request) {
    const int status = request ? evhttp_request_get_response_code(request) : 0;
    if (status == 0) {
        std::string why = "no response";
        if (job.connection) {
            if (bufferevent* bev = evhttp_connection_get_bufferevent(job.connection)) {
                if (SSL* ssl = bufferevent_openssl_get_ssl(bev); ssl && SSL_get_verify_result(ssl) != X509_V_OK)
                    why = "TLS: " + std::string(X509_verify_cert_error_string(SSL_get_verify_result(ssl)));
                else if (unsigned long e = bufferevent_get_openssl_error(bev); e != 0)
                    why = "TLS: " + std::string(ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "error");
            }
        }
        fetch_failed(job, why + " (connection refused, timeout, or TLS failure)");
        return;
    }
    if (status != 200) {
        fetch_failed(job, "HTTP status " + std::to_string(status));
        return;
    }
    evbuffer* body = evhttp_request_get_input_buffer(request);
    const std::size_t length = evbuffer_get_length(body);
    std::string text(length, '\0');
    evbuffer_copyout(body, text.data(), length);
    auto parsed = jwks::parse(text);
    if (auto* problem = std::get_if<std::string>(&parsed)) {
        fetch_failed(job, *problem);
        return;
    }
    publish(job, std::make_shared<const jwks::KeySet>(std::get<jwks::KeySet>(std::move(parsed))), "fetched");
}

void JwksFetcher::fetch_failed(Job& job, const std::string& why) {
    const jwks::Source::Origin& origin = job.source->origin();
    job.source->fetch_finished();
    metrics_.jwks_fetch(origin.route, false);
    // Retry soon, but never sooner than the periodic schedule would.
    if (!origin.url.empty()) job.schedule.next_periodic_ms = std::min(job.schedule.next_periodic_ms, now_ms() + kRetryMs);
    const std::int64_t now = now_ms();
    if (now - job.last_error_log_ms < kErrorLogIntervalMs) {
        ++job.suppressed_errors;
        return;
    }
    job.last_error_log_ms = now;
    const std::string& where = origin.url.empty() ? origin.file : origin.url;
    log_.log(obs::Level::Warn, "route {}: JWK Set {} failed: {}; keeping the {} ({} similar failure(s) not logged)",
             origin.route, where, why, job.source->current() ? "last good set" : "route closed (no keys yet)",
             job.suppressed_errors);
    job.suppressed_errors = 0;
}

void JwksFetcher::publish(Job& job, std::shared_ptr<const jwks::KeySet> set, const char* what) {
    const jwks::Source::Origin& origin = job.source->origin();
    metrics_.jwks_fetch(origin.route, true);
    metrics_.jwks_keys(origin.route, set->keys.size());
    for (const std::string& skipped : set->skipped)
        log_.log(obs::Level::Warn, "route {}: JWK Set: {} skipped", origin.route, skipped);
    std::string kids;
    for (const jwks::Key& key : set->keys) kids += (kids.empty() ? "" : ", ") + (key.kid.empty() ? "(no kid)" : key.kid);
    log_.log(obs::Level::Info, "route {}: JWK Set {} from {}: {} key(s): {}", origin.route, what,
             origin.url.empty() ? origin.file : origin.url, set->keys.size(), kids);
    job.source->publish(std::move(set));
    job.source->fetch_finished();
}

}  // namespace runtime
