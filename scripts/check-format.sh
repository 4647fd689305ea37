#!/usr/bin/env bash
# Fails (exit 1) when a C++ file of the repository is not formatted as .clang-format says, and lists
# the files. `make format` fixes them. CI runs this before building.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || apt-get install -y -qq clang-format >/dev/null
mapfile -t files < <(git ls-files '*.h' '*.cc')
bad=()
for f in "${files[@]}"; do
  if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then bad+=("$f"); fi
done
if [ ${#bad[@]} -gt 0 ]; then
  echo "check-format: ${#bad[@]} of ${#files[@]} files are not clang-format clean (run 'make format'):"
  printf '  %s\n' "${bad[@]}"
  exit 1
fi
echo "check-format: ${#files[@]} files clean ($(clang-format --version))"
