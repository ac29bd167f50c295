# Passed to llama-cpp-python's build as CMAKE_PROJECT_INCLUDE (the Makefile's LLAMA_CMAKE_ARGS).
#
# With GGML_BACKEND_DL=ON and GGML_CPU_ALL_VARIANTS=ON, llama.cpp builds one CPU backend per
# instruction-set level (ggml-cpu-haswell, ggml-cpu-skylakex, ...) as a loadable library, and ggml
# picks the best one for the running CPU when ggml_backend_load_all_from_path() is called -- the way
# llama.cpp's own releases ship. llama-cpp-python 0.3.36 installs only a target named plain
# "ggml-cpu", so its wheel would carry no CPU backend at all: this file installs every
# ggml-cpu-<variant> library beside libggml in the wheel's llama_cpp/lib, with the same $ORIGIN
# rpath llama-cpp-python gives its own libraries.
#
# CMAKE_PROJECT_INCLUDE is read after every project() call (llama_cpp, then llama.cpp and ggml);
# the guard defers one call to the end of the top-level CMakeLists, when every target exists.
get_property(_hearth_deferred GLOBAL PROPERTY HEARTH_BACKENDS_DEFERRED)
if(NOT _hearth_deferred)
    set_property(GLOBAL PROPERTY HEARTH_BACKENDS_DEFERRED TRUE)

    function(hearth_install_cpu_backends)
        set(_dir "${CMAKE_SOURCE_DIR}/vendor/llama.cpp/ggml/src")
        if(NOT IS_DIRECTORY "${_dir}")
            return()
        endif()
        get_property(_targets DIRECTORY "${_dir}" PROPERTY BUILDSYSTEM_TARGETS)
        foreach(_t IN LISTS _targets)
            get_target_property(_type ${_t} TYPE)
            # ggml-cpu-<variant>-feats are object libraries compiled into their variant: skipped.
            if(_t MATCHES "^ggml-cpu-" AND _type MATCHES "^(MODULE|SHARED)_LIBRARY$")
                message(STATUS "Hearth: installing CPU backend variant ${_t}")
                if(APPLE)
                    set_target_properties(${_t} PROPERTIES INSTALL_RPATH "@loader_path" BUILD_WITH_INSTALL_RPATH TRUE)
                else()
                    set_target_properties(${_t} PROPERTIES INSTALL_RPATH "$ORIGIN" BUILD_WITH_INSTALL_RPATH TRUE)
                endif()
                install(TARGETS ${_t}
                    LIBRARY DESTINATION ${SKBUILD_PLATLIB_DIR}/llama_cpp/lib
                    RUNTIME DESTINATION ${SKBUILD_PLATLIB_DIR}/llama_cpp/lib)
            endif()
        endforeach()
    endfunction()

    cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL hearth_install_cpu_backends)
endif()
