// wsgate: a reverse proxy and load balancer for WebSocket traffic.
#include <cstdio>
#include <cstring>
#include <string>

#include "config/config.h"
#include "runtime/server.h"

// The Makefile passes -DWSGATE_VERSION from the top-level VERSION file, the
// one place the version is written (it also names the Debian package).
#ifndef WSGATE_VERSION
#define WSGATE_VERSION "0.0.0+unknown"
#endif

namespace {

constexpr const char* kVersion = WSGATE_VERSION;

void print_usage(std::FILE* out) {
    std::fprintf(out,
                 "usage: wsgate [-c FILE] [-t]\n"
                 "  -c, --config FILE  configuration file (default conf/wsgate.toml)\n"
                 "  -t, --test         check the configuration and exit\n"
                 "  -v, --version      print the version and exit\n"
                 "  -h, --help         print this help and exit\n"
                 "signals: SIGHUP reload, SIGTERM/SIGINT graceful stop, SIGUSR1 reopen logs,\n"
                 "         SIGUSR2 upgrade the binary (a new process takes over the listeners)\n");
}

}  // namespace

int main(int argc, char** argv) {
    std::string config_path = "conf/wsgate.toml";
    bool test_only = false;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        if ((arg == "-c" || arg == "--config") && i + 1 < argc) {
            config_path = argv[++i];
        } else if (arg == "-t" || arg == "--test") {
            test_only = true;
        } else if (arg == "-v" || arg == "--version") {
            std::printf("wsgate %s\n", kVersion);
            return 0;
        } else if (arg == "-h" || arg == "--help") {
            print_usage(stdout);
            return 0;
        } else {
            std::fprintf(stderr, "wsgate: unknown argument '%s'\n", arg.c_str());
            print_usage(stderr);
            return 2;
        }
    }

    config::LoadResult result = config::load_file(config_path);
    if (auto* errors = std::get_if<std::vector<config::Error>>(&result)) {
        for (const config::Error& e : *errors) std::fprintf(stderr, "%s\n", e.to_string().c_str());
        if (test_only) std::fprintf(stderr, "configuration %s is invalid\n", config_path.c_str());
        return 1;
    }
    if (test_only) {
        std::printf("configuration %s is valid\n", config_path.c_str());
        return 0;
    }
    runtime::Server server(config_path, std::get<std::shared_ptr<const config::Config>>(std::move(result)));
    server.set_command_line(argc, argv);
    return server.run();
}
