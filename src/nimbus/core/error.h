// Error types shared by every Nimbus module.
#pragma once

#include <stdexcept>
#include <string>

namespace nimbus {

// A failure the user can fix (bad file, wrong parameter, mismatched grids).
// The message names the offending item and says what to do about it.
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A failure inside Nimbus or its libraries that is not the user's input.
class InternalError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace nimbus
