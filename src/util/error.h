// The one error type for bad user input: bad files, config keys, values. The CLI prints its
// message on one line and exits non-zero; anything else reaching main is a bug.
#pragma once
#include <stdexcept>
#include <string>

namespace blocklab {

struct UserError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace blocklab
