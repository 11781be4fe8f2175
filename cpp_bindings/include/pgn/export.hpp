// Symbol visibility of the shared library: only what is marked PGN_API is exported.
#pragma once

#if defined(_WIN32)
#define PGN_API
#else
#define PGN_API __attribute__((visibility("default")))
#endif
