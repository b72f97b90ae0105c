/* parkwalk: a thread stopped in the middle of a stack walk while libraries are closed and
 * reopened (issue 15).
 *
 * usage: parkwalk PLUGIN.so ROUNDS
 * A thread named "offheap-park" mallocs once (under OFFHEAP_TEST_PARK the library stops it
 * there, mid-walk, holding the module set it loaded) and then keeps allocating. Meanwhile
 * the main thread, ROUNDS times: dlclose(plugin), dlopen(plugin), plugin_alloc/plugin_free
 * (each dlopen and dlclose replaces the module set; a dlclose may unmap the plugin's unwind
 * tables). At the end it closes the plugin for good, joins the thread, and waits up to 20 s
 * for the plugin to leave /proc/self/maps (a close the library deferred until no walk could
 * reach the plugin must still happen). It prints the rounds done and whether the plugin was
 * unloaded (and on stderr whether the last dlclose had unmapped it by the time it returned);
 * exit status 0. Without the library the output is the same.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void *volatile sink;
static volatile int stop;

static void *parked(void *arg) {
    (void)arg;
    pthread_setname_np(pthread_self(), "offheap-park");
    void *p = malloc(100); /* the walk that parks */
    sink = p;
    free(p);
    while (!stop) {
        void *q = malloc(64);
        sink = q;
        free(q);
        usleep(1000);
    }
    return NULL;
}

static int mapped(const char *name) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[4096];
    int found = 0;
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, name)) found = 1;
    if (f) fclose(f);
    return found;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: parkwalk PLUGIN.so ROUNDS\n"); return 2; }
    const char *plugin = argv[1];
    int rounds = atoi(argv[2]);
    const char *base = strrchr(plugin, '/') ? strrchr(plugin, '/') + 1 : plugin;
    void *h = dlopen(plugin, RTLD_NOW);
    if (!h) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 1; }
    pthread_t t;
    pthread_create(&t, NULL, parked, NULL);
    usleep(200000); /* the thread is in its walk by now */
    int done = 0;
    for (int i = 0; i < rounds; i++) {
        if (dlclose(h) != 0) { fprintf(stderr, "dlclose: %s\n", dlerror()); return 1; }
        h = dlopen(plugin, RTLD_NOW);
        if (!h) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 1; }
        void *(*alloc)(size_t) = (void *(*)(size_t))dlsym(h, "plugin_alloc");
        void (*release)(void *) = (void (*)(void *))dlsym(h, "plugin_free");
        if (!alloc || !release) { fprintf(stderr, "dlsym failed\n"); return 1; }
        release(alloc(200 + i));
        done++;
        usleep(2000);
    }
    dlclose(h);
    /* stderr, not compared: whether the last close unmapped the plugin before returning */
    fprintf(stderr, "parkwalk: after the last dlclose the plugin is %s\n",
            mapped(base) ? "still mapped" : "unmapped");
    stop = 1;
    pthread_join(t, NULL);
    int gone = 0;
    for (int waited = 0; waited < 2000 && !gone; waited++) {
        gone = !mapped(base);
        if (!gone) usleep(10000);
    }
    printf("parkwalk: rounds=%d plugin %s\n", done, gone ? "unloaded" : "still mapped");
    return 0;
}
