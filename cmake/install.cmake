# `cmake --install`: the static library with its public headers, the CMake package
# (nimbus-config.cmake, its version file, the exported nimbus::nimbus target and the
# dependency list), a pkg-config file, the CLI and the shipped workflows. The Python
# package's rules sit next to its target in the top-level CMakeLists.txt.
#
# Components: development (library, headers, CMake and pkg-config files), runtime (CLI and
# workflows), python (the package; it uses the runtime component's workflows).
include(CMakePackageConfigHelpers)
set(NIMBUS_CMAKE_INSTALL_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/nimbus)

install(TARGETS nimbus_lib EXPORT nimbus-targets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT development)
# include/nimbus/ and the generated nimbus/version.h: the public headers, nothing from src/.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/nimbus ${NIMBUS_GENERATED_INCLUDE_DIR}/nimbus
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT development)
install(EXPORT nimbus-targets NAMESPACE nimbus:: DESTINATION ${NIMBUS_CMAKE_INSTALL_DIR} COMPONENT development)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/nimbus-config.cmake.in
                              ${PROJECT_BINARY_DIR}/nimbus-config.cmake
                              INSTALL_DESTINATION ${NIMBUS_CMAKE_INSTALL_DIR}
                              PATH_VARS NIMBUS_WORKFLOWS_INSTALL_DIR)
# 0.x: a minor release may break the API.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/nimbus-config-version.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/nimbus-config.cmake ${PROJECT_BINARY_DIR}/nimbus-config-version.cmake
              ${PROJECT_SOURCE_DIR}/cmake/nimbus-dependencies.cmake
        DESTINATION ${NIMBUS_CMAKE_INSTALL_DIR} COMPONENT development)

# pkg-config: the prefix relative to the .pc file, so the tree can be installed anywhere.
# Everything a static link needs is in Libs/Requires (there is no shared libnimbus).
set(NIMBUS_PC_DIR ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}" OR IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(NIMBUS_PC_PREFIX ${CMAKE_INSTALL_PREFIX})
  set(NIMBUS_PC_LIBDIR ${CMAKE_INSTALL_FULL_LIBDIR})
  set(NIMBUS_PC_INCLUDEDIR ${CMAKE_INSTALL_FULL_INCLUDEDIR})
else()
  file(RELATIVE_PATH prefix_from_pc_dir /${NIMBUS_PC_DIR} /)
  string(REGEX REPLACE "/$" "" prefix_from_pc_dir "${prefix_from_pc_dir}")
  set(NIMBUS_PC_PREFIX "\${pcfiledir}/${prefix_from_pc_dir}")
  set(NIMBUS_PC_LIBDIR "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
  set(NIMBUS_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
configure_file(${PROJECT_SOURCE_DIR}/cmake/nimbus.pc.in ${PROJECT_BINARY_DIR}/nimbus.pc.in @ONLY)
# Generator expressions: the private link dependencies' files as CMake found them.
file(GENERATE OUTPUT ${PROJECT_BINARY_DIR}/nimbus.pc INPUT ${PROJECT_BINARY_DIR}/nimbus.pc.in)
install(FILES ${PROJECT_BINARY_DIR}/nimbus.pc DESTINATION ${NIMBUS_PC_DIR} COMPONENT development)

install(TARGETS nimbus RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/workflows/ DESTINATION ${NIMBUS_WORKFLOWS_INSTALL_DIR} COMPONENT runtime)
