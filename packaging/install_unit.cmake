# Run by `cmake --install` (and CPack): writes inferscope.service with the binary and topology paths
# of the prefix being installed to (CMAKE_INSTALL_PREFIX here is that prefix, e.g. /usr for the
# .deb), then installs it under <prefix>/lib/systemd/system (DESTDIR honoured by file(INSTALL)).
# Set before: INFERSCOPE_UNIT_TEMPLATE, INFERSCOPE_UNIT_WORK, INFERSCOPE_BINDIR_REL, INFERSCOPE_DATADIR_REL.
set(INFERSCOPE_UNIT_BINDIR "${CMAKE_INSTALL_PREFIX}/${INFERSCOPE_BINDIR_REL}")
set(INFERSCOPE_UNIT_DATADIR "${CMAKE_INSTALL_PREFIX}/${INFERSCOPE_DATADIR_REL}")
# A directory of its own per run: installs into two prefixes at once (tests) must not share it.
string(RANDOM LENGTH 12 _inferscope_unit_tag)
set(_inferscope_unit_dir "${INFERSCOPE_UNIT_WORK}/unit-${_inferscope_unit_tag}")
configure_file("${INFERSCOPE_UNIT_TEMPLATE}" "${_inferscope_unit_dir}/inferscope.service" @ONLY)
file(INSTALL "${_inferscope_unit_dir}/inferscope.service"
  DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/systemd/system"
  FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
file(REMOVE_RECURSE "${_inferscope_unit_dir}")
