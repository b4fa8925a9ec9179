#include "nimbus/core/interrupt.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>

namespace nimbus {
namespace {

// A fixed table, because the handler may only use async-signal-safe calls
// (unlink, write, _exit): no allocation, no locks.
constexpr int kSlots = 256;  // three per output (file, GDAL's .ovr.tmp, .msk.ovr.tmp)
constexpr std::size_t kPathMax = 4096;
char g_paths[kSlots][kPathMax];
std::atomic<bool> g_used[kSlots];
std::mutex g_register_mutex;

void on_signal(int sig) {
  for (int i = 0; i < kSlots; ++i) {
    if (g_used[i].load()) ::unlink(g_paths[i]);
  }
  const char* msg = sig == SIGINT   ? "nimbus: interrupted (SIGINT); partial outputs removed\n"
                    : sig == SIGHUP ? "nimbus: hung up (SIGHUP); partial outputs removed\n"
                                    : "nimbus: terminated (SIGTERM); partial outputs removed\n";
  ssize_t ignored = ::write(STDERR_FILENO, msg, std::strlen(msg));
  (void)ignored;
  ::_exit(128 + sig);
}

}  // namespace

void install_interrupt_cleanup() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGHUP, &sa, nullptr);  // the terminal closed (ssh dropped): same cleanup
    // A closed stderr pipe (`nimbus … 2>&1 | head -1`) must not kill the run half-way
    // through a write with its partial files left: failed writes of messages are ignored.
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    sigaction(SIGPIPE, &ignore, nullptr);
  });
}

int register_temporary(const std::string& path) {
  if (path.size() >= kPathMax) return -1;
  std::lock_guard<std::mutex> lock(g_register_mutex);
  for (int i = 0; i < kSlots; ++i) {
    if (!g_used[i].load()) {
      std::memcpy(g_paths[i], path.c_str(), path.size() + 1);
      g_used[i].store(true);
      return i;
    }
  }
  return -1;
}

void unregister_temporary(int slot) {
  if (slot >= 0 && slot < kSlots) g_used[slot].store(false);
}

}  // namespace nimbus
