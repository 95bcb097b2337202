// Named ranges ("phases") of a training step for the profiler: data, forward/block{b}, loss,
// backward, optimizer. A range is a user-scope RecordFunction, so blocklab's own profiler (and
// any other RecordFunction observer, e.g. Kineto on a CUDA build) sees it. With no observer
// installed a range costs one branch, and its name is not even built.
#pragma once
#include <string>
#include <type_traits>
#include <utility>

#include <ATen/record_function.h>

namespace blocklab {

class Range {
 public:
  explicit Range(const char* name) : rf_(at::RecordScope::USER_SCOPE) {
    if (rf_.isActive()) rf_.before(name);
  }
  /// `make_name()` returns the name (a std::string); it runs only when a profiler is listening.
  template <class MakeName, class = std::enable_if_t<std::is_invocable_r_v<std::string, MakeName>>>
  explicit Range(MakeName&& make_name) : rf_(at::RecordScope::USER_SCOPE) {
    if (rf_.isActive()) rf_.before(std::string(std::forward<MakeName>(make_name)()));
  }
  Range(const Range&) = delete;
  Range& operator=(const Range&) = delete;

  /// Closes the range before the end of its scope (idempotent; the destructor calls it too).
  void end() { rf_.end(); }

 private:
  at::RecordFunction rf_;
};

}  // namespace blocklab
