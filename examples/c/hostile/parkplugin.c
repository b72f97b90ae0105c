/* parkplugin: a library parkwalk dlopens and dlcloses over and over. plugin_alloc() mallocs
 * from inside the library, so stack walks need this library's unwind tables. */
#include <stdlib.h>
#include <string.h>

static void *volatile kept;

__attribute__((noinline)) void *plugin_alloc(size_t n) {
    void *p = malloc(n);
    if (p) memset(p, 3, n);
    return p;
}

void plugin_free(void *p) { free(p); }

__attribute__((constructor)) static void plugin_loaded(void) { kept = plugin_alloc(16); }
__attribute__((destructor)) static void plugin_unloaded(void) { plugin_free(kept); }
