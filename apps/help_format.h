// --help as the CLI prints it: options under their declared groups, descriptions
// wrapped to the terminal's width, examples at the end.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

namespace nimbus_cli {

// The width help is wrapped to: the terminal's (stdout), else $COLUMNS, else 80;
// never below 40.
std::size_t help_width();

// `text` broken into lines of at most `width` characters at spaces (a longer word
// keeps its own line); each line after the first starts with `indent` spaces.
std::string wrap_text(const std::string& text, std::size_t width, std::size_t indent);

// A CLI11 formatter wrapping option and subcommand descriptions to `width`.
std::shared_ptr<CLI::Formatter> wrapping_formatter(std::size_t width);

}  // namespace nimbus_cli
