// A consumer of the installed library: public headers only. Prints the version and checks
// the header and library agree (and equal argv[1] when given), that a declared parameter
// resolves and a bad value is refused with an error naming it, and that Nimbus's errors and
// cancellation work across the library boundary. Exit 0 = all good.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "nimbus/nimbus.h"

#if defined(NIMBUS_DOWNSTREAM_INSTALLED) && __has_include("nimbus/workflow/runner.h")
#error "a private Nimbus header (src/nimbus/...) is visible to an installed consumer"
#endif

namespace {

int failures = 0;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "nimbus_downstream: FAILED: %s\n", what);
    ++failures;
  }
}

void open_scene(const std::string& path) {
  throw nimbus::InputError("s2_raster '" + path + "' does not exist; give a Sentinel-2 raster");
}

}  // namespace

int main(int argc, char** argv) {
  std::printf("nimbus %s (library %s)\n", nimbus::kVersion, nimbus::library_version());
  check(std::strcmp(nimbus::kVersion, nimbus::library_version()) == 0, "header and library versions agree");
  check(std::string(NIMBUS_VERSION_STRING) ==
            std::to_string(NIMBUS_VERSION_MAJOR) + "." + std::to_string(NIMBUS_VERSION_MINOR) + "." +
                std::to_string(NIMBUS_VERSION_PATCH),
        "NIMBUS_VERSION_STRING is MAJOR.MINOR.PATCH");
  if (argc > 1) check(std::strcmp(argv[1], nimbus::library_version()) == 0, "library version equals argv[1]");

  try {
    open_scene("missing.tif");
    check(false, "InputError thrown");
  } catch (const nimbus::InternalError&) {
    check(false, "InputError is not an InternalError");
  } catch (const nimbus::InputError& e) {
    check(std::string(e.what()).find("missing.tif") != std::string::npos, "InputError keeps its message");
  }

  // A declared parameter, resolved and validated by the library (its code, not just headers).
  const std::vector<nimbus::ParamSpec> declared = {
      nimbus::ParamSpec{"closing_size", nimbus::ParamType::Int, 5, "closing disk radius in pixels", 0, 16384}
          .affecting_output()};
  check(nimbus::resolve_parameters(declared, nimbus::Json::object())["closing_size"] == 5, "the default resolves");
  try {
    nimbus::resolve_parameters(declared, nimbus::Json{{"closing_size", 20000}});
    check(false, "an out-of-range value is refused");
  } catch (const nimbus::InputError& e) {  // a ParameterError is an InputError
    const auto* parameter_error = dynamic_cast<const nimbus::ParameterError*>(&e);
    check(parameter_error && parameter_error->parameter() == "closing_size", "the error names the parameter");
  }

  int polls = 0;
  const nimbus::CancelCheck cancel_on_third_poll = [&polls] { return ++polls == 3; };
  try {
    for (int chip = 0; chip < 10; ++chip) nimbus::throw_if_cancelled(cancel_on_third_poll);
    check(false, "Cancelled thrown");
  } catch (const nimbus::Cancelled&) {
    check(polls == 3, "cancelled at the third poll");
  }
  nimbus::throw_if_cancelled(nimbus::CancelCheck{});  // empty: never cancelled

  std::printf("%s\n", failures ? "FAILED" : "ok");
  return failures ? 1 : 0;
}
