/* statefile.h - owning the state file (issue 10, point 3). Until state is
 * shared properly between processes, one state file belongs to one
 * modelgate: a second one on it would erase the first one's changes (a
 * kill wiped by the other's next write). The owner holds an flock on
 * "<state_file>.lock" for its whole life, which the kernel releases however
 * it ends, and cleans up what crashed saves left behind. */
#ifndef MG_STATEFILE_H
#define MG_STATEFILE_H

#include <stddef.h>

/* Take the lock of state file path: the descriptor to keep open (closing
 * it releases the lock), or a negative errno with a message in err (in use
 * by another process, naming its pid when the lock file says it). When the
 * lock file cannot be made (the directory is missing or read-only), -1
 * and a warning: no process can write a state file there either, so there
 * is nothing to guard, and changes answer "not saved". */
int mg_statefile_lock(const char *path, char *err, size_t errlen);

/* Remove "<path>.tmp.<pid>" files that saves of processes no longer alive
 * left behind (a crash between writing and renaming); each is logged.
 * Returns how many were removed. */
int mg_statefile_clean(const char *path);

#endif
