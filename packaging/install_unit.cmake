# Run by `cmake --install` (and CPack): writes inferscope.service with the binary and topology paths
# of the prefix being installed to (CMAKE_INSTALL_PREFIX here is that prefix, e.g. /usr for the
# .deb), then installs it under <prefix>/lib/systemd/system (DESTDIR honoured by file(INSTALL)).
# Set before: INFERSCOPE_UNIT_TEMPLATE, INFERSCOPE_UNIT_WORK, INFERSCOPE_BINDIR_REL, INFERSCOPE_DATADIR_REL.
set(INFERSCOPE_UNIT_BINDIR "${CMAKE_INSTALL_PREFIX}/${INFERSCOPE_BINDIR_REL}")
set(INFERSCOPE_UNIT_DATADIR "${CMAKE_INSTALL_PREFIX}/${INFERSCOPE_DATADIR_REL}")
configure_file("${INFERSCOPE_UNIT_TEMPLATE}" "${INFERSCOPE_UNIT_WORK}/inferscope.service" @ONLY)
file(INSTALL "${INFERSCOPE_UNIT_WORK}/inferscope.service"
  DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/systemd/system" FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
