# OpenCV core, imgproc and imgcodecs as the targets opencv_core, opencv_imgproc, opencv_imgcodecs:
# from OpenCV's own CMake package when there is one (OpenCV_DIR, a full libopencv-dev), else from
# the headers and libraries of Debian's per-module packages (libopencv-{core,imgproc,imgcodecs}-dev,
# which ship no CMake package).
find_package(OpenCV QUIET COMPONENTS core imgproc imgcodecs)
if(OpenCV_FOUND)
  message(STATUS "OpenCV ${OpenCV_VERSION} from its CMake package (${OpenCV_DIR})")
  return()
endif()

find_path(PGN_OPENCV_INCLUDE_DIR opencv2/core.hpp PATH_SUFFIXES opencv4 REQUIRED)
foreach(module core imgproc imgcodecs)
  find_library(PGN_OPENCV_${module}_LIBRARY opencv_${module} REQUIRED)
  add_library(opencv_${module} SHARED IMPORTED)
  set_target_properties(opencv_${module} PROPERTIES
    IMPORTED_LOCATION ${PGN_OPENCV_${module}_LIBRARY}
    INTERFACE_INCLUDE_DIRECTORIES ${PGN_OPENCV_INCLUDE_DIR})
endforeach()
message(STATUS "OpenCV from ${PGN_OPENCV_INCLUDE_DIR} and ${PGN_OPENCV_core_LIBRARY}")
