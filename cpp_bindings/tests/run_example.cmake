# ctest: run pgn-infer on the generated image, check its exit status and the two PNG files.
file(REMOVE_RECURSE ${OUT})
file(MAKE_DIRECTORY ${OUT})
execute_process(COMMAND ${PROGRAM} ${INPUTS}/image.png ${INPUTS}/model.pgn.onnx --threshold 0.5 --out ${OUT}
                RESULT_VARIABLE status OUTPUT_VARIABLE output ERROR_VARIABLE errors)
message("${output}${errors}")
if(NOT status EQUAL 0)
  message(FATAL_ERROR "pgn-infer exited with ${status}")
endif()
foreach(name image.heatmap.png image.ood.png)
  if(NOT EXISTS ${OUT}/${name})
    message(FATAL_ERROR "pgn-infer did not write ${name}")
  endif()
endforeach()
# A second run must refuse to overwrite without --force (exit status 2, one line).
execute_process(COMMAND ${PROGRAM} ${INPUTS}/image.png ${INPUTS}/model.pgn.onnx --threshold 0.5 --out ${OUT}
                RESULT_VARIABLE status ERROR_VARIABLE errors)
if(NOT status EQUAL 2 OR NOT errors MATCHES "exists; pass --force")
  message(FATAL_ERROR "pgn-infer overwrote its outputs or failed otherwise: ${status} ${errors}")
endif()
