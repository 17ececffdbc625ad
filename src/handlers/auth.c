/* auth.c - client keys (auth.h). */
#include "handlers/auth.h"

struct mg_str mg_auth_presented_key(const struct mg_http_req *rq) {
  struct mg_str v;
  if (mg_http_req_header(rq, "authorization", &v) &&
      mg_str_has_prefix_nocase(v, "bearer ")) {
    v.p += 7;
    v.len -= 7;
    while (v.len && v.p[0] == ' ') {
      v.p++;
      v.len--;
    }
    return v;
  }
  if (mg_http_req_header(rq, "x-api-key", &v))
    return v;
  return MG_STR_NULL;
}

bool mg_auth_client(const struct mg_config *cfg, const struct mg_http_req *rq,
                    const char **name) {
  struct mg_str key;
  const struct mg_client *cl;
  *name = NULL;
  if (!cfg->clients.enabled)
    return true;
  key = mg_auth_presented_key(rq);
  cl = key.len ? mg_clients_find(&cfg->clients, key.p, key.len) : NULL;
  if (cl == NULL)
    return false;
  *name = cl->name;
  return true;
}

const char *mg_auth_message(const struct mg_http_req *rq) {
  return mg_auth_presented_key(rq).len
             ? "Incorrect API key provided."
             : "You didn't provide an API key. Provide it in an "
               "Authorization header (Bearer auth).";
}
