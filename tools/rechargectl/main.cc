// rechargectl: the ops CLI of the recharge gateway. Usage and exit codes:
// `rechargectl --help`, tools/rechargectl/cli.h.
#include "tools/rechargectl/cli.h"

int main(int argc, char** argv) { return recharge::ctl::Run(argc, argv); }
