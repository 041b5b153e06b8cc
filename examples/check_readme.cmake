# Fails unless README (a Markdown file) holds SOURCE verbatim, so a documented example cannot
# drift from the program the test suite compiles and runs.
# Run as: cmake -DREADME=<file.md> -DSOURCE=<file.cpp> -P check_readme.cmake
cmake_minimum_required(VERSION 3.25)
file(READ "${README}" readme)
file(READ "${SOURCE}" source)
string(FIND "${readme}" "${source}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "${README} does not contain ${SOURCE} verbatim: paste the current file into its code block")
endif()
