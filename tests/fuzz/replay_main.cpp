// SPDX-License-Identifier: Apache-2.0
// main() for a fuzz target outside a libFuzzer build: runs every file given,
// or every file of every directory given, through LLVMFuzzerTestOneInput
// once. The meson tests replay the seed corpus and the regressions with it,
// so every crash the fuzzers found stays fixed in the ordinary suite.
#include "fuzz_common.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

namespace fs = std::filesystem;

int main(int argc, char **argv)
{
    std::vector<fs::path> inputs;
    for (int i = 1; i < argc; ++i) {
        fs::path p(argv[i]);
        std::error_code ec;
        if (fs::is_directory(p, ec)) {
            for (const auto &e : fs::directory_iterator(p))
                if (e.is_regular_file() &&
                    e.path().filename().string().rfind('.', 0) != 0)
                    inputs.push_back(e.path());
        } else if (fs::is_regular_file(p, ec)) {
            inputs.push_back(p);
        } else {
            std::cerr << "replay: " << p.string()
                      << ": no such file or directory\n";
            return 2;
        }
    }
    std::sort(inputs.begin(), inputs.end());
    if (inputs.empty()) {
        std::cerr << "replay: no inputs\n";
        return 77; // nothing to replay: SKIP, not a silent pass
    }
    for (const auto &p : inputs) {
        std::ifstream in(p, std::ios::binary);
        std::string bytes((std::istreambuf_iterator<char>(in)),
                          std::istreambuf_iterator<char>());
        if (!in.good() && !in.eof()) {
            std::cerr << "replay: cannot read " << p.string() << "\n";
            return 2;
        }
        std::cerr << "replay: " << p.string() << " (" << bytes.size()
                  << " bytes)\n";
        LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t *>(bytes.data()),
                               bytes.size());
    }
    std::cout << "replayed " << inputs.size() << " inputs\n";
    return 0;
}
