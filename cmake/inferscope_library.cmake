# inferscope_library(<name> SOURCES <files...> DEPS <targets...>)
#
# One static library per module, named inferscope_<name>, with the repository root as its include
# root (so includes read "pipeline/status.h"), warnings on, and its dependencies public.
function(inferscope_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(inferscope_${name} STATIC ${ARG_SOURCES})
  target_include_directories(inferscope_${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_compile_options(inferscope_${name} PRIVATE ${INFERSCOPE_WARNINGS})
  target_compile_definitions(inferscope_${name} PUBLIC MSGPACK_NO_BOOST)
  target_link_libraries(inferscope_${name} PUBLIC ${ARG_DEPS})
endfunction()

# inferscope_test(<name> SOURCES <files...> DEPS <targets...> LABELS <labels...>
#                 [PROPERTIES <name> <value>...])
#
# A GoogleTest executable whose tests CTest discovers one by one, with the given labels and any
# further test properties.
function(inferscope_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;LABELS;PROPERTIES" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_compile_options(${name} PRIVATE ${INFERSCOPE_WARNINGS})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main)
  gtest_discover_tests(${name} PROPERTIES LABELS "${ARG_LABELS}" ${ARG_PROPERTIES}
    DISCOVERY_TIMEOUT 60)
endfunction()
