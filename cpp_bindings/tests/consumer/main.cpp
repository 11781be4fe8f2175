// Runs a model on a flat grey image through the installed pgn library and prints the map names.
#include <iostream>
#include <vector>

#include <pgn/pgn.hpp>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  try {
    const pgn::Runtime runtime(argv[1]);
    std::vector<std::uint8_t> pixels(16 * 16 * 3, 128);
    const pgn::Result result = runtime.run(pgn::ImageView{pixels.data(), 16, 16});
    std::cout << runtime.backend_name() << " " << result.score_names.size() << " maps " << result.pred.height << "x"
              << result.pred.width << "\n";
    return result.pred.height == 16 ? 0 : 1;
  } catch (const pgn::Error& error) {
    std::cerr << error.what() << "\n";
    return 1;
  }
}
