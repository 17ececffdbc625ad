/* http.c - response building blocks. */
#include "server/http.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/str.h"

const char *mg_http_reason(int s) {
  switch (s) {
  case 100: return "Continue";
  case 200: return "OK";
  case 201: return "Created";
  case 202: return "Accepted";
  case 204: return "No Content";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 411: return "Length Required";
  case 413: return "Content Too Large";
  case 414: return "URI Too Long";
  case 415: return "Unsupported Media Type";
  case 417: return "Expectation Failed";
  case 422: return "Unprocessable Content";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 499: return "Client Closed Request";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  case 505: return "HTTP Version Not Supported";
  default: return "Unknown";
  }
}

void mg_head_u64(struct mg_head *h, uint64_t v) {
  char tmp[24], *d = mg_u64_digits(tmp, v);
  mg_head_put(h, d, (size_t)(tmp + sizeof(tmp) - d));
}

void mg_head_begin(struct mg_head *h, int status, const char *date) {
  h->len = 0;
  h->overflow = false;
  MG_HEAD_LIT(h, "HTTP/1.1 ");
  mg_head_u64(h, (uint64_t)status);
  MG_HEAD_LIT(h, " ");
  mg_head_puts(h, mg_http_reason(status));
  MG_HEAD_LIT(h, "\r\ndate: ");
  mg_head_puts(h, date);
  MG_HEAD_LIT(h, "\r\nserver: modelgate\r\n");
}

void mg_head_end(struct mg_head *h, const char *content_type,
                 int64_t content_length, bool close, const char *extra) {
  if (content_type) {
    MG_HEAD_LIT(h, "content-type: ");
    mg_head_puts(h, content_type);
    MG_HEAD_LIT(h, "\r\n");
  }
  if (content_length >= 0) {
    MG_HEAD_LIT(h, "content-length: ");
    mg_head_u64(h, (uint64_t)content_length);
    MG_HEAD_LIT(h, "\r\n");
  } else if (content_length == -1) {
    MG_HEAD_LIT(h, "transfer-encoding: chunked\r\n");
  }
  if (extra)
    mg_head_puts(h, extra);
  if (close)
    MG_HEAD_LIT(h, "connection: close\r\n");
  MG_HEAD_LIT(h, "\r\n");
}

void mg_http_date(char out[40], int64_t t) {
  static const char *days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char *months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  time_t tt = (time_t)t;
  struct tm tm;
  gmtime_r(&tt, &tm);
  snprintf(out, 40, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday],
           tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour,
           tm.tm_min, tm.tm_sec);
}
