// todd: the command line client of a ToDD server.
#include "commands.hpp"

#include <iostream>
#include <unistd.h>

int main(int argc, char **argv)
{
    std::ios::sync_with_stdio(false);
    std::vector<std::string> args(argv + 1, argv + argc);
    todd::cli::Io io{std::cin, isatty(STDIN_FILENO) == 1, std::cout, std::cerr};
    return todd::cli::run_cli(args, io);
}
