#include "nimbus/core/interrupt.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>

namespace nimbus {
namespace {

// Tables of fixed slots, because the handler may only use async-signal-safe calls
// (unlink, write, _exit): no allocation, no locks. When every slot is taken another
// table is allocated (outside the handler) and linked in, so any number of outputs in
// flight is covered; tables are kept for reuse, never freed.
constexpr int kSlots = 256;  // per table; three per output (file, GDAL's .ovr.tmp, .msk.ovr.tmp)
constexpr std::size_t kPathMax = 4096;  // PATH_MAX: unlink() refuses longer paths anyway
struct SlotTable {
  char paths[kSlots][kPathMax];
  std::atomic<bool> used[kSlots];
  std::atomic<SlotTable*> next{nullptr};
};
SlotTable g_first_table;
std::mutex g_register_mutex;
// On a terminal a progress bar may hold the current line: the message starts a new one.
bool g_stderr_is_terminal = false;

void on_signal(int sig) {
  for (SlotTable* t = &g_first_table; t != nullptr; t = t->next.load()) {
    for (int i = 0; i < kSlots; ++i) {
      if (t->used[i].load()) ::unlink(t->paths[i]);
    }
  }
  const char* msg = sig == SIGINT   ? "nimbus: interrupted (SIGINT); partial outputs removed\n"
                    : sig == SIGHUP ? "nimbus: hung up (SIGHUP); partial outputs removed\n"
                                    : "nimbus: terminated (SIGTERM); partial outputs removed\n";
  ssize_t ignored = g_stderr_is_terminal ? ::write(STDERR_FILENO, "\n", 1) : 0;
  ignored = ::write(STDERR_FILENO, msg, std::strlen(msg));
  (void)ignored;
  ::_exit(128 + sig);
}

}  // namespace

void install_interrupt_cleanup() {
  static std::once_flag once;
  std::call_once(once, [] {
    g_stderr_is_terminal = ::isatty(STDERR_FILENO) == 1;
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
  int base = 0;
  for (SlotTable* t = &g_first_table;; t = t->next.load(), base += kSlots) {
    for (int i = 0; i < kSlots; ++i) {
      if (!t->used[i].load()) {
        std::memcpy(t->paths[i], path.c_str(), path.size() + 1);
        t->used[i].store(true);
        return base + i;
      }
    }
    // Published only when complete: the handler sees either no table or a whole one.
    if (t->next.load() == nullptr) t->next.store(new SlotTable());
  }
}

void unregister_temporary(int slot) {
  if (slot < 0) return;
  std::lock_guard<std::mutex> lock(g_register_mutex);
  SlotTable* t = &g_first_table;
  for (; t != nullptr && slot >= kSlots; slot -= kSlots) t = t->next.load();
  if (t != nullptr) t->used[slot].store(false);
}

}  // namespace nimbus
