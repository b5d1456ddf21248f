/*
 * dlist.h - an intrusive doubly linked list, for the waiters the park and
 * the mutex design keep on their stacks.  No locking: the owner's lock
 * guards the list and its links.
 */
#ifndef KWQ_CORE_DLIST_H
#define KWQ_CORE_DLIST_H

#include <stddef.h>

struct kwq__dlink {
	struct kwq__dlink *prev, *next;
};

struct kwq__dlist {
	struct kwq__dlink *head, *tail;
};

static inline void kwq__dlist_init(struct kwq__dlist *l)
{
	l->head = l->tail = NULL;
}

static inline void kwq__dlist_push_front(struct kwq__dlist *l, struct kwq__dlink *n)
{
	n->prev = NULL;
	n->next = l->head;
	if (l->head != NULL)
		l->head->prev = n;
	else
		l->tail = n;
	l->head = n;
}

static inline void kwq__dlist_push_back(struct kwq__dlist *l, struct kwq__dlink *n)
{
	n->next = NULL;
	n->prev = l->tail;
	if (l->tail != NULL)
		l->tail->next = n;
	else
		l->head = n;
	l->tail = n;
}

static inline void kwq__dlist_unlink(struct kwq__dlist *l, struct kwq__dlink *n)
{
	if (n->prev != NULL)
		n->prev->next = n->next;
	else
		l->head = n->next;
	if (n->next != NULL)
		n->next->prev = n->prev;
	else
		l->tail = n->prev;
}

#endif
