#include "progress_display.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>

#include <fmt/format.h>

namespace nimbus_cli {
namespace {

// Bar redraws at most this often: a terminal needs no more, and a slow one (ssh) is spared.
constexpr double kBarRedrawSeconds = 0.1;
constexpr double kDefaultLineInterval = 5.0;

int terminal_columns() {
  struct winsize ws {};
  if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  if (const char* c = std::getenv("COLUMNS")) {
    const int n = std::atoi(c);
    if (n > 0) return n;
  }
  return 80;
}

std::string timestamp() {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char text[16];
  std::strftime(text, sizeof text, "%H:%M:%S", &local);
  return text;
}

std::string rate_text(double chips_per_second) {
  if (chips_per_second <= 0.0) return "- chips/s";
  if (chips_per_second < 1.0) return fmt::format("{:.1f} s/chip", 1.0 / chips_per_second);
  return fmt::format("{:.{}f} chips/s", chips_per_second, chips_per_second < 10.0 ? 1 : 0);
}

std::string bar_graph(double fraction, int width) {
  const int filled = std::clamp(static_cast<int>(fraction * width + 1e-9), 0, width);
  return "[" + std::string(static_cast<std::size_t>(filled), '#') + std::string(static_cast<std::size_t>(width - filled), '.') +
         "]";
}

}  // namespace

ProgressMode progress_mode_for_stderr(bool quiet) {
  if (quiet) return ProgressMode::Off;
  return ::isatty(STDERR_FILENO) ? ProgressMode::Bar : ProgressMode::Lines;
}

double progress_line_interval() {
  if (const char* text = std::getenv("NIMBUS_PROGRESS_INTERVAL")) {
    char* end = nullptr;
    const double v = std::strtod(text, &end);
    if (end != text && *end == '\0' && v >= 0.0) return v;
  }
  return kDefaultLineInterval;
}

std::string clock_duration(double seconds) {
  const long s = std::max(0L, static_cast<long>(seconds + 0.5));
  if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
  return fmt::format("{}:{:02}", s / 60, s % 60);
}

ProgressDisplay::ProgressDisplay(ProgressMode mode, bool stage_timings)
    : mode_(mode), stage_timings_(stage_timings), interval_s_(progress_line_interval()) {}

bool ProgressDisplay::due(bool last) {
  const auto now = Clock::now();
  const double since = std::chrono::duration<double>(now - last_output_).count();
  const bool is_due = last || !any_output_ || since >= (mode_ == ProgressMode::Bar ? kBarRedrawSeconds : interval_s_);
  if (is_due) {
    last_output_ = now;
    any_output_ = true;
  }
  return is_due;
}

void ProgressDisplay::print_line(const std::string& text) {
  if (bar_shown_) std::fputs("\r\033[K", stderr);
  std::fprintf(stderr, "%s\n", text.c_str());
  if (bar_shown_) draw_bar(bar_);
  std::fflush(stderr);
}

void ProgressDisplay::draw_bar(const std::string& text) {
  bar_ = text;
  // Never wider than the terminal: a wrapped line could not be redrawn in place.
  const std::size_t columns = static_cast<std::size_t>(std::max(terminal_columns() - 1, 10));
  std::fprintf(stderr, "\r%s\033[K", text.substr(0, columns).c_str());
  std::fflush(stderr);
  bar_shown_ = true;
}

void ProgressDisplay::end_bar() {
  if (!bar_shown_) return;
  std::fputs("\n", stderr);
  std::fflush(stderr);
  bar_shown_ = false;
  bar_.clear();
}

void ProgressDisplay::finish() {
  const std::lock_guard<std::mutex> lock(mutex_);
  end_bar();
}

void ProgressDisplay::around_log(const std::function<void()>& write) {
  const std::lock_guard<std::mutex> lock(mutex_);
  if (bar_shown_) {
    std::fputs("\r\033[K", stderr);
    std::fflush(stderr);
  }
  write();
  if (bar_shown_) draw_bar(bar_);
}

void ProgressDisplay::on_scene(const nimbus::RunProgress& p) {
  if (mode_ == ProgressMode::Off) return;
  const std::lock_guard<std::mutex> lock(mutex_);
  using Stage = nimbus::RunProgress::Stage;
  const auto now = Clock::now();
  if (p.stage == Stage::Prepare && p.stage_finished) chips_start_ = now;
  if (p.stage == Stage::Chips && !p.stage_finished && p.chips_total > 0) {
    const double elapsed = std::chrono::duration<double>(now - chips_start_).count();
    const double rate = elapsed > 0.0 ? p.chips_done / elapsed : 0.0;
    const bool last = p.chips_done == p.chips_total;
    const double eta = rate > 0.0 ? (p.chips_total - p.chips_done) / rate : 0.0;
    const double fraction = static_cast<double>(p.chips_done) / p.chips_total;
    const std::string counts = fmt::format("chips {}/{} ({:.0f}%), {}", p.chips_done, p.chips_total,
                                           100.0 * fraction, rate_text(rate));
    const std::string tail =
        last ? fmt::format("done in {}", clock_duration(elapsed)) : fmt::format("ETA {}", clock_duration(eta));
    if (due(last)) {
      if (mode_ == ProgressMode::Bar) {
        draw_bar(fmt::format("{} {}, {}", bar_graph(fraction, 30), counts, tail));
      } else {
        print_line(fmt::format("[{}] {}, {}", timestamp(), counts, tail));
      }
    }
  }
  if (p.stage == Stage::Chips && p.stage_finished) end_bar();
  if (p.stage_finished && stage_timings_) {
    print_line(fmt::format("[{}] stage {}: {:.2f} s", timestamp(), nimbus::stage_name(p.stage), p.stage_seconds));
  }
}

void ProgressDisplay::on_batch_scene(int index, int total, const std::string& id, const nimbus::RunProgress& p) {
  if (mode_ == ProgressMode::Off) return;
  const std::lock_guard<std::mutex> lock(mutex_);
  using Stage = nimbus::RunProgress::Stage;
  const auto now = Clock::now();
  if ((p.stage == Stage::Prepare && p.stage_finished) || chips_scene_ != index) {
    chips_start_ = now;
    chips_scene_ = index;
  }
  if (p.stage == Stage::Chips && !p.stage_finished && p.chips_total > 0 && total > 0) {
    const double scene_elapsed = std::chrono::duration<double>(now - chips_start_).count();
    const double rate = scene_elapsed > 0.0 ? p.chips_done / scene_elapsed : 0.0;
    // Scenes before this one are finished; this one counts by its chips.
    const double fraction = (index + static_cast<double>(p.chips_done) / p.chips_total) / total;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const double eta = fraction > 0.0 ? elapsed / fraction * (1.0 - fraction) : 0.0;
    const std::string text = fmt::format("scene {}/{} {}: chips {}/{} ({:.0f}%), {}, batch ETA {}", index + 1, total,
                                         id, p.chips_done, p.chips_total, 100.0 * p.chips_done / p.chips_total,
                                         rate_text(rate), clock_duration(eta));
    // The scene's own last chip is followed by its outcome line: no "last" here.
    if (due(false)) {
      if (mode_ == ProgressMode::Bar) {
        draw_bar(fmt::format("{} {}", bar_graph(fraction, 20), text));
      } else {
        print_line(fmt::format("[{}] {}", timestamp(), text));
      }
    }
  }
  if (p.stage_finished && stage_timings_) {
    print_line(fmt::format("[{}] scene {}: stage {}: {:.2f} s", timestamp(), id, nimbus::stage_name(p.stage),
                           p.stage_seconds));
  }
}

void ProgressDisplay::on_batch_scene_done(int done, int total, const nimbus::SceneOutcome& o) {
  if (mode_ == ProgressMode::Off) return;
  const std::lock_guard<std::mutex> lock(mutex_);
  const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
  const double eta = done > 0 ? elapsed / done * (total - done) : 0.0;
  // A failed scene's error is printed once, in the summary after the batch.
  const std::string tail = done < total ? fmt::format(", batch ETA {}", clock_duration(eta)) : std::string();
  if (mode_ == ProgressMode::Bar) {
    const double fraction = total > 0 ? static_cast<double>(done) / total : 1.0;
    draw_bar(fmt::format("{} {}/{} scenes, {} {}{}", bar_graph(fraction, 20), done, total, o.id, o.status, tail));
    last_output_ = Clock::now();
    any_output_ = true;
    if (done == total) end_bar();
  } else {
    print_line(fmt::format("[{}/{}] {}: {} in {:.1f} s{}", done, total, o.id, o.status, o.seconds, tail));
  }
}

void ProgressAwareSink::log(const spdlog::details::log_msg& msg) {
  if (!should_log(msg.level)) return;
  ProgressDisplay* display = display_.load();
  if (display == nullptr) {
    inner_->log(msg);
    return;
  }
  display->around_log([&] { inner_->log(msg); });
}

}  // namespace nimbus_cli
