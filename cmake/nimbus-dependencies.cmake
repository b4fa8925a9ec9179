# The packages libnimbus links against. Included by the top-level CMakeLists.txt (each one
# REQUIRED) and by the installed nimbus-config.cmake (through find_dependency, so a missing
# one makes find_package(nimbus) report nimbus not found and name the dependency). The
# library is static: a consumer's link needs the private dependencies too (onnx_proto,
# protobuf, OpenSSL's libcrypto, oneDNN, libgomp), so they are listed here as well.
include(CMakeFindDependencyMacro)

macro(_nimbus_dependency)
  if(NIMBUS_FINDING_INSTALLED_PACKAGE)
    find_dependency(${ARGN})
  else()
    find_package(${ARGN} REQUIRED)
  endif()
endmacro()

_nimbus_dependency(GDAL CONFIG)
_nimbus_dependency(OpenCV COMPONENTS core imgproc imgcodecs dnn)
_nimbus_dependency(ONNX CONFIG)
_nimbus_dependency(Protobuf)
_nimbus_dependency(OpenSSL)
_nimbus_dependency(fmt)
_nimbus_dependency(spdlog)
_nimbus_dependency(yaml-cpp)
_nimbus_dependency(nlohmann_json)
_nimbus_dependency(Threads)

# oneDNN (libdnnl-dev). Its CMake package insists on OpenCL development files for its GPU
# runtime, which Nimbus does not use, so the library and header are found directly. Debian's
# oneDNN runs on libgomp; Nimbus sets per-run team sizes through its C API (and the blocked
# kernels use OpenMP pragmas on GCC).
if(NOT TARGET nimbus::dnnl)
  find_library(NIMBUS_DNNL_LIBRARY NAMES dnnl)
  find_path(NIMBUS_DNNL_INCLUDE_DIR oneapi/dnnl/dnnl.hpp)
  find_library(NIMBUS_GOMP_LIBRARY NAMES gomp libgomp.so.1)
  foreach(var NIMBUS_DNNL_LIBRARY NIMBUS_DNNL_INCLUDE_DIR NIMBUS_GOMP_LIBRARY)
    if(NOT ${var})
      set(message "${var} not found: install libdnnl-dev (oneDNN) and libgomp1, or set ${var}")
      if(NIMBUS_FINDING_INSTALLED_PACKAGE)
        set(${CMAKE_FIND_PACKAGE_NAME}_NOT_FOUND_MESSAGE "${message}")
        set(${CMAKE_FIND_PACKAGE_NAME}_FOUND FALSE)
        return()
      endif()
      message(FATAL_ERROR "${message}")
    endif()
  endforeach()
  add_library(nimbus::dnnl UNKNOWN IMPORTED)
  set_target_properties(nimbus::dnnl PROPERTIES IMPORTED_LOCATION "${NIMBUS_DNNL_LIBRARY}"
                                                INTERFACE_INCLUDE_DIRECTORIES "${NIMBUS_DNNL_INCLUDE_DIR}")
  add_library(nimbus::gomp UNKNOWN IMPORTED)
  set_target_properties(nimbus::gomp PROPERTIES IMPORTED_LOCATION "${NIMBUS_GOMP_LIBRARY}")
endif()
