/* statefile.c - the state file's lock and leftovers. */
#include "runtime/statefile.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "common/log.h"

int mg_statefile_lock(const char *path, char *err, size_t errlen) {
  char lock[4096], pid[32];
  int fd, n, e;

  if (snprintf(lock, sizeof(lock), "%s.lock", path) >= (int)sizeof(lock)) {
    snprintf(err, errlen, "state file path %s is too long", path);
    return -ENAMETOOLONG;
  }
  fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    mg_warn("cannot create the state file's lock %s: %s (changes will not "
            "be saved either)",
            lock, strerror(errno));
    return -1;
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char other[32];
    ssize_t k;
    e = errno;
    k = pread(fd, other, sizeof(other) - 1, 0);
    other[k > 0 ? k : 0] = '\0';
    other[strcspn(other, "\r\n")] = '\0';
    close(fd);
    if (e == EWOULDBLOCK)
      snprintf(err, errlen,
               "state file %s is in use by another modelgate process%s%s%s "
               "(lock %s): each process needs a state file of its own "
               "(admin.state_file)",
               path, other[0] ? " (pid " : "", other, other[0] ? ")" : "",
               lock);
    else
      snprintf(err, errlen, "cannot lock %s: %s", lock, strerror(e));
    return -e;
  }
  /* Who holds it, for the message of the next one that tries. */
  n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
  if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n)
    mg_warn("cannot write the pid into %s: %s", lock, strerror(errno));
  return fd;
}

int mg_statefile_clean(const char *path) {
  char dir[4096];
  const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
  size_t bl = strlen(base);
  struct dirent *d;
  DIR *dp;
  int removed = 0;

  if (slash == NULL)
    snprintf(dir, sizeof(dir), ".");
  else
    snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path + (slash == path)),
             path);
  dp = opendir(dir);
  if (dp == NULL)
    return 0;
  while ((d = readdir(dp)) != NULL) {
    const char *p = d->d_name, *digits;
    char *end;
    long pid;
    if (strncmp(p, base, bl) != 0 || strncmp(p + bl, ".tmp.", 5) != 0)
      continue;
    digits = p + bl + 5;
    pid = strtol(digits, &end, 10);
    if (end == digits || *end != '\0' || pid <= 0)
      continue;
    /* A save in progress of a live process is its own business; ours
     * cannot be in progress while we start. */
    if (pid != (long)getpid() && (kill((pid_t)pid, 0) == 0 || errno != ESRCH))
      continue;
    if (unlinkat(dirfd(dp), p, 0) == 0) {
      removed++;
      mg_info("removed %s/%s, left by a state save that did not finish "
              "(pid %ld)",
              dir, p, pid);
    }
  }
  closedir(dp);
  return removed;
}
