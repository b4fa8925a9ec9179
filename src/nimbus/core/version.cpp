#include "nimbus/version.h"

namespace nimbus {

// Compiled into the library, so this is the library's version whatever headers the caller used.
const char* library_version() noexcept { return NIMBUS_VERSION_STRING; }

}  // namespace nimbus
