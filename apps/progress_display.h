// How the CLI shows a run's progress: the library reports chips and stages through
// a callback (RunProgress); this renders them on stderr. On a terminal one bar is
// redrawn in place; in a pipe or log, a line now and then (time-based) and a last one.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include <spdlog/sinks/sink.h>

#include "nimbus/batch/batch.h"
#include "nimbus/pipeline/improve_cloud_mask.h"

namespace nimbus_cli {

enum class ProgressMode {
  Off,    // -q
  Lines,  // stderr is a pipe or file
  Bar,    // stderr is a terminal
};

// Off when quiet, else Bar on a terminal, Lines otherwise.
ProgressMode progress_mode_for_stderr(bool quiet);

// Seconds between two progress lines in Lines mode: $NIMBUS_PROGRESS_INTERVAL, else 5.
double progress_line_interval();

class ProgressDisplay {
 public:
  // stage_timings (-v): one line per finished stage with its duration.
  ProgressDisplay(ProgressMode mode, bool stage_timings);
  ProgressDisplay(const ProgressDisplay&) = delete;
  ProgressDisplay& operator=(const ProgressDisplay&) = delete;

  // One scene (improve-cloud-mask).
  void on_scene(const nimbus::RunProgress& p);

  // A batch of `total` scenes: progress inside scene `index`, and a finished scene.
  void on_batch_scene(int index, int total, const std::string& id, const nimbus::RunProgress& p);
  void on_batch_scene_done(int done, int total, const nimbus::SceneOutcome& outcome);

  // Writes a log line with `write`, the bar stepping aside for it.
  void around_log(const std::function<void()>& write);

  // Ends the bar's line (when one is shown), e.g. before an error is printed.
  void finish();

 private:
  using Clock = std::chrono::steady_clock;
  // Caller holds mutex_.
  void print_line(const std::string& text);
  void draw_bar(const std::string& text);
  void end_bar();
  bool due(bool last);

  ProgressMode mode_;
  bool stage_timings_;
  double interval_s_;
  std::mutex mutex_;
  std::string bar_;            // the bar's current text; empty: none shown
  bool bar_shown_ = false;
  Clock::time_point start_ = Clock::now();        // of the run (batch: of the batch)
  Clock::time_point chips_start_ = Clock::now();  // of the current scene's chip stage
  Clock::time_point last_output_{};               // last line or bar drawn
  bool any_output_ = false;
  int chips_scene_ = -1;  // the scene whose chip stage chips_start_ belongs to
};

// A log sink that lets the attached progress display's bar step aside for each log line.
class ProgressAwareSink : public spdlog::sinks::sink {
 public:
  explicit ProgressAwareSink(std::shared_ptr<spdlog::sinks::sink> inner) : inner_(std::move(inner)) {}
  void attach(ProgressDisplay* display) { display_ = display; }  // nullptr: none

  void log(const spdlog::details::log_msg& msg) override;
  void flush() override { inner_->flush(); }
  void set_pattern(const std::string& pattern) override { inner_->set_pattern(pattern); }
  void set_formatter(std::unique_ptr<spdlog::formatter> formatter) override {
    inner_->set_formatter(std::move(formatter));
  }

 private:
  std::shared_ptr<spdlog::sinks::sink> inner_;
  std::atomic<ProgressDisplay*> display_{nullptr};
};

// "0:17", "12:05", "1:02:03".
std::string clock_duration(double seconds);

}  // namespace nimbus_cli
