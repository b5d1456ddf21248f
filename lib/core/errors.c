/* errors.c - kwq_strerror. */
#include <errno.h>

#include "kwq.h"

const char *kwq_strerror(int err)
{
	long e = err < 0 ? -(long)err : (long)err;

	switch (e) {
	case 0:
		return "success";
	case EINVAL:
		return "invalid argument";
	case ENOMEM:
		return "out of memory";
	case ESHUTDOWN:
		return "queue is shutting down";
	case EAGAIN:
		return "nothing ready";
	case ETIMEDOUT:
		return "timed out";
	case ENOTSUP:
		return "not supported";
	case EOVERFLOW:
		return "value too large";
	case ECANCELED:
		return "cancelled";
	default:
		return "unknown error";
	}
}
