# cython: language_level=3
# What other compiled modules use of the turns (fastserver._stream, fastserver._acceptors).

cdef void begin_turn() noexcept
cdef void take_turn() noexcept nogil
cdef void give_turn() noexcept nogil
