"""What users run: the ``hellomeme-batch`` command and the Ray job entry points.

Lives here: ``cli`` (the command), ``render`` (a render job here or in a Ray job, exit statuses,
signals), ``options`` (command-line options -> the job's config and engine spec, engine flags made
from each engine's options), ``progress`` (the terminal's view of a long job), ``terminal_noise``
(third-party notices kept out of the terminal), ``submit``, ``job_entry`` and ``sealed_options`` (Ray
Jobs submission with credentials kept out of Ray's logs), ``demo`` and ``demo_media`` (the built-in
demo), ``manifest_cmd`` and ``manifest_builder``.

May import everything below it; nothing imports ``jobs``.
"""
