#include "help_format.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <sstream>

namespace nimbus_cli {
namespace {

// The left column (option names, types, defaults); longer names put their
// description on the next line.
constexpr std::size_t kNameColumn = 30;

class WrappingFormatter : public CLI::Formatter {
 public:
  explicit WrappingFormatter(std::size_t width) : width_(width) { column_width(kNameColumn); }

  std::string make_option(const CLI::Option* opt, bool is_positional) const override {
    return row(make_option_name(opt, is_positional) + make_option_opts(opt), make_option_desc(opt));
  }

  std::string make_subcommand(const CLI::App* sub) const override {
    return row(sub->get_display_name(true), sub->get_description());
  }

  // CLI11 starts each group with a blank line and also puts one between groups:
  // one is enough, so groups start right away and the usage line ends with the blank.
  std::string make_group(std::string group, bool is_positional, std::vector<const CLI::Option*> opts) const override {
    std::string out = group + ":\n";
    for (const CLI::Option* opt : opts) out += make_option(opt, is_positional);
    return is_positional ? out + "\n" : out;  // make_groups separates the other groups
  }

  std::string make_usage(const CLI::App* app, std::string name) const override {
    return CLI::Formatter::make_usage(app, std::move(name)) + "\n";
  }

  std::string make_description(const CLI::App* app) const override {
    const std::string text = CLI::Formatter::make_description(app);
    if (text.empty()) return text;
    return wrap_text(text.substr(0, text.find_last_not_of('\n') + 1), width_, 0) + "\n";
  }

 private:
  std::string row(const std::string& name, const std::string& description) const {
    std::string left = "  " + name;
    std::string out = left;
    if (description.empty()) return out + "\n";
    if (left.size() >= kNameColumn) {
      out += "\n" + std::string(kNameColumn, ' ');
    } else {
      out += std::string(kNameColumn - left.size(), ' ');
    }
    const std::size_t text_width = width_ > kNameColumn + 20 ? width_ - kNameColumn : 20;
    std::string wrapped = wrap_text(description, text_width, 0);
    // Continuation lines start under the description column.
    std::string indented;
    for (const char c : wrapped) {
      indented += c;
      if (c == '\n') indented += std::string(kNameColumn, ' ');
    }
    return out + indented + "\n";
  }

  std::size_t width_;
};

}  // namespace

std::size_t help_width() {
  std::size_t width = 80;
  struct winsize ws {};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
    width = ws.ws_col;
  } else if (const char* c = std::getenv("COLUMNS")) {
    const long n = std::strtol(c, nullptr, 10);
    if (n > 0) width = static_cast<std::size_t>(n);
  }
  return std::max<std::size_t>(width, 40);
}

std::string wrap_text(const std::string& text, std::size_t width, std::size_t indent) {
  std::string out;
  std::istringstream paragraphs(text);
  std::string paragraph;
  bool first_line = true;
  while (std::getline(paragraphs, paragraph)) {
    std::istringstream words(paragraph);
    std::string word, line;
    const auto flush = [&] {
      if (!first_line) out += "\n" + std::string(indent, ' ');
      out += line;
      first_line = false;
      line.clear();
    };
    bool any = false;
    while (words >> word) {
      any = true;
      const std::size_t limit = first_line ? width : (width > indent ? width - indent : 1);
      if (!line.empty() && line.size() + 1 + word.size() > limit) flush();
      line += (line.empty() ? "" : " ") + word;
    }
    if (any || paragraph.empty()) flush();
  }
  return out;
}

std::shared_ptr<CLI::Formatter> wrapping_formatter(std::size_t width) {
  return std::make_shared<WrappingFormatter>(width);
}

}  // namespace nimbus_cli
