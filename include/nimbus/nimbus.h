// Nimbus's public C++ API: everything an installed consumer may include, in one header.
// (find_package(nimbus) + target_link_libraries(app nimbus::nimbus), or pkg-config nimbus.)
// Each public header lives under include/nimbus/ and is listed here, one line each.
#pragma once

#include "nimbus/version.h"
#include "nimbus/core/error.h"
#include "nimbus/parameters.h"
