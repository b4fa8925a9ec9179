// Clean interruption: on SIGINT/SIGTERM/SIGHUP, partially written outputs are removed
// before the process exits, so nothing half-written is ever left behind.
#pragma once

#include <string>

namespace nimbus {

// Installs the SIGINT/SIGTERM/SIGHUP handlers (idempotent) and ignores SIGPIPE. The
// handler removes every registered path, prints one line and exits with 128 + signal.
void install_interrupt_cleanup();

// Registers a temporary file to remove if the process is interrupted; any number
// may be registered at once. Returns a slot id for unregister_temporary(), or -1
// for a path of PATH_MAX (4096) bytes or more, which unlink() could not remove either.
int register_temporary(const std::string& path);
void unregister_temporary(int slot);

}  // namespace nimbus
