# cython: language_level=3
# What other compiled modules use of the core (fastserver._acceptors).

from fastserver._poller cimport sockaddr_storage, socklen_t


cdef object sockaddr_to_python(sockaddr_storage *addr, socklen_t length)
