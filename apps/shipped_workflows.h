// Where the CLI finds the workflows shipped with Nimbus.
#pragma once

#include <string>

// The shipped workflows directory for this copy of the CLI: the source tree's when it runs
// from its build tree, else the installed one next to the binary (<prefix>/share/nimbus/workflows
// for <prefix>/bin/nimbus, wherever the tree was installed or moved to).
std::string shipped_workflows_dir();
