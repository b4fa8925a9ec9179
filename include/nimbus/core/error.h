// Error types shared by every Nimbus module.
#pragma once

#include <functional>
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

// The caller asked a long call to stop (Ctrl-C in Python, an abort callback).
// Partial outputs are removed on the way out; not an error of the input.
class Cancelled : public std::runtime_error {
 public:
  Cancelled() : std::runtime_error("cancelled; partial outputs removed") {}
};

// Polled by long calls between chips and stages; returns true to stop the call,
// which then throws Cancelled. Empty: never cancelled.
using CancelCheck = std::function<bool()>;

inline void throw_if_cancelled(const CancelCheck& cancel) {
  if (cancel && cancel()) throw Cancelled();
}

}  // namespace nimbus
