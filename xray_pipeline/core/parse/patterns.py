"""The regexes of the access-log grammar (docs/log-format.md): the fast path's
one-pass capture and the tolerant path's steps."""

TS = r"\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}(?:\.\d{1,9})?"


# The fast path: the shapes of nearly every line of a real file, in one capturing regex that
# is one-pass (at each byte at most one way on, so the regex crate runs it as a one-pass DFA,
# about twice as fast as a pattern with a choice, such as `( \[x\])?( email: y)?`; and at most
# 16 groups, and a small table: with Unicode's `\d`, which takes many states, this regex lost its
# one-pass DFA (most likely the crate's 1 MB limit) and ran 2.7 times slower, hence ASCII
# `[0-9]`; a line with other digits is the tolerant path's). It takes Xray's and V2Ray's
# accepted lines with or without `from`, a fraction, a detour or an email (the new ` email: x`
# form), IPv4, bracketed IPv6 or unix-socket sources, `tcp:`/`udp:` or URL destinations,
# rejected lines, and dnsLog lines of the servers that start with a byte no source starts
# with (`UDP:`, `TCP//`, `TCPL//`, `localhost`, `quic+local://`). Its classes are looser than
# the grammar's where that keeps it one-pass; _fast_ok() checks the rest on short strings.
# On the lines it takes, its values equal the tolerant path's (tested).
FAST_CAPTURE = (
    r"^(?P<ts>[0-9]{4}/[0-9]{2}/[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?) (?:"
    # a dnsLog line: the rest is read by DNS_FAST_REST (the tolerant path's DNS regexes)
    r"(?P<server>UDP:\S+|TCPL?//\S+|localhost|quic\+local://\S+) "
    r"(?P<dns>(?:got answer|cache (?:HIT|OPTIMISTE)): .*)"
    r"|(?:from )?(?:(?P<src_network>tcp|u(?:dp|nix)):)?"
    # hex digits only inside brackets: `[Info]` and its siblings are error-log levels.
    # DNS and DoH (the DNS module's pseudo sources) and unix sockets print no port;
    # _fast_ok() checks that only they go without one
    r"(?:\[(?P<src6>[0-9A-Fa-f:.]+)\]|(?P<src_ip>[0-9.]+|D(?:NS|oH)|@[^\s:\[\]]*|/[^\s:\[\]]*))"
    r"(?::(?P<src_port>[0-9]+))? "
    r"(?:accepted (?:(?P<dest_network>tcp|udp):"
    r"(?:\[(?P<dest6>[^\s\]]+)\]|(?P<dest_host>[^\s:\[\]]+)):(?P<dest_port>[0-9]+)"
    # an HTTP inbound's URL (`//host:port` for CONNECT, `http://host/path`); URL reads it
    r"|(?P<dest_url>(?:https?:)?//[^\s/?#:@\[\]]+(?::[0-9]+)?(?:[/?#]\S*)?))"
    # ` [detour]`, ` email: x` (V2Ray: `email:x`), both or neither. The email runs to the end
    # of the line, trailing spaces trimmed after; _fast_ok() leaves the rare email that ends in
    # other whitespace or holds a glued record to the tolerant path (EMAIL_TO_END)
    r"(?: +(?:\[(?P<detour>[^\]]*)\] *)?(?:email: ?(?P<email>\S.*))?)?"
    r"|rejected +(?P<reason>\S.*)))$"
)


DETOUR = r"^(?:(?P<inbound_tag>.*?) (?:->|>>|==>) )?(?P<outbound_tag>.*)$"


# Tolerant grammar, step 1: the first Xray timestamp anywhere (skips collector prefixes).
LOCATE_TS = rf"^.*?(?P<ts>{TS})(?P<body>.*)$"


LEVEL = r"^\[(?:Debug|Info|Warning|Error)\]"


# An error-log line in the access log's stream (the tolerant path's `error_log`), as the fast
# path sees it: the level right after the timestamp.
LEVEL_LINE = rf"^({TS}) " + LEVEL[1:]


DNS_AFTER_SERVER = (
    r"^(?P<dns_status>got answer|cache HIT|cache OPTIMISTE): (?P<domain>[^\s\[\]]+)(?P<dtail>.*)$"
)


DNS = r"^(?P<server>\S+) " + DNS_AFTER_SERVER[1:]


DNS_TAIL = (
    r"^\s*->\s*\[(?P<ips>[^\]]*)\]?"
    r"(?:\s+(?P<elapsed>\d[\d.]*[a-zµ]+(?:[\d.]+[a-zµ]+)*))?"
    r"(?:\s*<(?P<error>.*?)>?)?\s*$"
)


# The fast path's reading of a dnsLog line after its server, both steps in one: the domain
# stops at the first space or bracket, so a tail that starts with a space is DNS_TAIL's.
DNS_FAST_REST = DNS_AFTER_SERVER.removesuffix("(?P<dtail>.*)$") + (
    r"(?:\s+" + DNS_TAIL.removeprefix(r"^\s*").removesuffix("$") + ")?$"
)


ACCESS = (
    r"^(?:from\s+)?(?:(?P<src_network>tcp|udp|unix):)?"
    r"(?:\[(?P<src_b>[^\]]*)\]|(?P<src_h>[^\s\[\]]+?))(?:\s*:\s*(?P<src_port>\d+))?"
    r"\s+(?P<status>accepted|rejected)(?:\s+(?P<rest>.*?))?\s*$"
)


# What follows "accepted": the destination, then the detour and the email (in `after`).
ACCEPTED_REST = (
    r"^(?:(?P<dest_network>tcp|udp):(?:\[(?P<dest_b>[^\]]*)\]|(?P<dest_h>[^\s\[\]]+?))"
    r"\s*:\s*(?P<dest_port>\d+)|(?P<url>\S*//\S*))(?P<after>\s.*)?$"
)


# The email runs to the end of the line, trailing whitespace trimmed (it may hold spaces: V2Ray
# takes any string), and stops before a glued record (whitespace, then a timestamp): the lazy
# group ends at the first place where what follows is that, or only whitespace.
EMAIL_TO_END = rf"(?P<email>\S.*?)(?:\s+{TS}.*)?\s*$"
# what _fast_ok() leaves to EMAIL_TO_END: trailing whitespace other than spaces (the fast path
# trims those), or a glued record
EMAIL_FOR_TOLERANT = rf"[^\S ]$|\s{TS}"


AFTER_DEST = (
    r"^\s*(?:\[(?:(?P<inbound_tag>[^\]]*?) (?:->|>>|==>) )?(?P<outbound_tag>[^\]]*)\])?"
    r"\s*(?:email:\s*" + EMAIL_TO_END + ")?"
)


REJECTED_EMAIL = r"(?:^|\s)email:\s*" + EMAIL_TO_END


URL = (
    r"^(?:[A-Za-z][A-Za-z0-9+.-]*:)?//(?:[^/?#@\s]*@)?"
    r"(?:\[(?P<h6>[^\]]*)\]|(?P<h>[^/?#:\s]*))(?::(?P<p>\d+))?"
)


# Sources that print no port (spec 2.2); any other portless word is not a source.
PORTLESS_SOURCES = ("DNS", "DoH", "@")


# Go's time.Duration.String(): `1h2m3.5s` from a second up, one unit below (`38.2ms`, `850µs`)
_DECIMAL = r"\d+(?:\.\d+)?"


DURATION = (
    rf"^(?:(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>{_DECIMAL})s)?"
    rf"|(?P<v>{_DECIMAL})(?P<unit>ns|µs|us|ms))$"
)
