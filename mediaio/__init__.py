"""Storage and media I/O: fsspec objects with an allow-list and safe writes, and video and image decoding
and encoding with the real ffmpeg.

Lives here: ``storage`` (which URIs a job may touch, bounded reads, all-or-nothing writes),
``redaction`` (text safe to print: credentials redacted, control characters escaped, in every log
record), ``clips`` (driving clips read with PyAV: their real stream facts, frames streamed at the
generation rate), ``sample_tables`` (how big an index an MP4's box headers make the demuxer build,
counted before a clip is opened), ``metadata_tags`` (how many metadata tags a Matroska, MP4, Ogg,
AVI, FLV or ASF clip holds, counted likewise), ``media`` (the media limits, a clip's audio, encoding
MP4s, loading portraits), ``colour_tags`` (HDR and wide-gamut portraits and clips told by colour code
points, converted to sRGB), ``threads`` (how many threads a stage's native libraries may use) and
``native_notices`` (their start-up notices on standard error kept out of the terminal).  It imports
no Ray and nothing else of this project, so every other layer may use it.
"""
