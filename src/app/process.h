/* process.h - `modelgate serve`: the process around the workers.
 *
 * It owns the runtime and the telemetry, starts server.workers event loops
 * (worker 0 on the main loop, the others on threads of their own), runs
 * the control side on the main loop - signals, the admin listener, the
 * ramp timer, reloads - and stops everything in order on SIGTERM. */
#ifndef MG_PROCESS_H
#define MG_PROCESS_H

#include "config/config.h"

/* Serve cfg until SIGTERM/SIGINT. config_path: the file to reload on
 * SIGHUP (NULL: the built-in config, nothing to reload); port_file: where
 * to write the bound ports, or NULL. Returns the exit status: 0 after a
 * clean stop, 1 on failure. */
int mg_process_serve(struct mg_config *cfg, const char *config_path,
                     const char *port_file);

#endif
