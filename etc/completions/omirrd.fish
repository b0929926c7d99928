# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_omirrd_global_optspecs
    string join \n config= peers= host= root= state-dir= f/foreground v/verbose D/debug in-flight= max-clock-offset= tombstone-horizon= d= h/help V/version
end

function __fish_omirrd_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_omirrd_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_omirrd_using_subcommand
    set -l cmd (__fish_omirrd_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c omirrd -n "__fish_omirrd_needs_command" -l config -d 'The Distfile [without --config, /etc/omirrd.conf is read if only it exists]' -r -F
complete -c omirrd -n "__fish_omirrd_needs_command" -l peers -d 'The peers file: how to reach and recognise each host' -r -F
complete -c omirrd -n "__fish_omirrd_needs_command" -l host -d 'This host\'s name in the Distfile and the peers file [default: the machine\'s host name]' -r
complete -c omirrd -n "__fish_omirrd_needs_command" -l root -d 'Resolve every absolute Distfile path under DIR on this host' -r -F
complete -c omirrd -n "__fish_omirrd_needs_command" -l state-dir -d 'Where the key pair, certificate and index live' -r -F
complete -c omirrd -n "__fish_omirrd_needs_command" -l in-flight -d 'File content that may be in flight from each peer at once: fetched ahead, or queued for the file being written. Takes K, M and G suffixes (powers of 1024)' -r
complete -c omirrd -n "__fish_omirrd_needs_command" -l max-clock-offset -d 'The most another host\'s wall clock may differ from this host\'s: a peer further off is refused, and a change stamped further ahead than this is set aside. Seconds, or with an s, m or h suffix' -r
complete -c omirrd -n "__fish_omirrd_needs_command" -l tombstone-horizon -d 'How long a deletion is remembered (its tombstone kept): a host away for longer reconciles with its peers when it comes back (see docs/sync-model.md, "Tombstone expiry"). Expiry runs at start and every hour (or every TIME, if shorter). Seconds, or with an s, m, h or d suffix; "never" keeps tombstones for ever' -r
complete -c omirrd -n "__fish_omirrd_needs_command" -s d -d 'Define or override a Distfile variable, as rdist\'s -d. VALUE is empty, one name, or a parenthesised list' -r
complete -c omirrd -n "__fish_omirrd_needs_command" -s f -l foreground -d 'Stay in the foreground and log to stderr'
complete -c omirrd -n "__fish_omirrd_needs_command" -s v -l verbose -d 'Also log what moves, per peer: changes, files fetched and served, actions applied (DEBUG). -vv is -D'
complete -c omirrd -n "__fish_omirrd_needs_command" -s D -l debug -d 'Also log every watcher event, every frame and why each change wins or loses (TRACE)'
complete -c omirrd -n "__fish_omirrd_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c omirrd -n "__fish_omirrd_needs_command" -s V -l version -d 'Print version'
complete -c omirrd -n "__fish_omirrd_needs_command" -f -a "check" -d 'Validate the Distfile and the peers file and show what this host mirrors with whom. Exits 0 only if there is no error'
complete -c omirrd -n "__fish_omirrd_needs_command" -f -a "keygen" -d 'Create this host\'s key pair and certificate in the state directory and print its fingerprint'
complete -c omirrd -n "__fish_omirrd_needs_command" -f -a "id" -d 'Print this host\'s fingerprint, in the form the peers file takes'
complete -c omirrd -n "__fish_omirrd_needs_command" -f -a "completions" -d 'Print the shell completion script for SHELL on standard output'
complete -c omirrd -n "__fish_omirrd_needs_command" -f -a "status" -d 'Show the running daemon\'s peers (connected or not, since when, changes and frames each way, queue, last error) and local counters, read from its status socket in the state directory'
complete -c omirrd -n "__fish_omirrd_needs_command" -f -a "verify" -d 'Ask the running daemon whether this host and each peer hold the same tree: it compares its index with every peer\'s, mirrored tree by mirrored tree, and lists every path that differs with both hosts\' versions'
complete -c omirrd -n "__fish_omirrd_needs_command" -f -a "demo" -d 'Try omirr out: run three hosts on this machine that mirror one tree'
complete -c omirrd -n "__fish_omirrd_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c omirrd -n "__fish_omirrd_using_subcommand check" -l config -d 'The Distfile [without --config, /etc/omirrd.conf is read if only it exists]' -r -F
complete -c omirrd -n "__fish_omirrd_using_subcommand check" -l peers -d 'The peers file: how to reach and recognise each host' -r -F
complete -c omirrd -n "__fish_omirrd_using_subcommand check" -l host -d 'This host\'s name in the Distfile and the peers file [default: the machine\'s host name]' -r
complete -c omirrd -n "__fish_omirrd_using_subcommand check" -l root -d 'Resolve every absolute Distfile path under DIR on this host' -r -F
complete -c omirrd -n "__fish_omirrd_using_subcommand check" -l state-dir -d 'Where the key pair, certificate and index live' -r -F
complete -c omirrd -n "__fish_omirrd_using_subcommand check" -l in-flight -d 'File content that may be in flight from each peer at once: fetched ahead, or queued for the file being written. Takes K, M and G suffixes (powers of 1024)' -r
complete -c omirrd -n "__fish_omirrd_using_subcommand check" -l max-clock-offset -d 'The most another host\'s wall clock may differ from this host\'s: a peer further off is refused, and a change stamped further ahead than this is set aside. Seconds, or with an s, m or h suffix' -r
complete -c omirrd -n "__fish_omirrd_using_subcommand check" -l tombstone-horizon -d 'How long a deletion is remembered (its tombstone kept): a host away for longer reconciles with its peers when it comes back (see docs/sync-model.md, "Tombstone expiry"). Expiry runs at start and every hour (or every TIME, if shorter). Seconds, or with an s, m, h or d suffix; "never" keeps tombstones for ever' -r
complete -c omirrd -n "__fish_omirrd_using_subcommand check" -s d -d 'Define or override a Distfile variable, as rdist\'s -d. VALUE is empty, one name, or a parenthesised list' -r
complete -c omirrd -n "__fish_omirrd_using_subcommand check" -s f -l foreground -d 'Stay in the foreground and log to stderr'
complete -c omirrd -n "__fish_omirrd_using_subcommand check" -s v -l verbose -d 'Also log what moves, per peer: changes, files fetched and served, actions applied (DEBUG). -vv is -D'
complete -c omirrd -n "__fish_omirrd_using_subcommand check" -s D -l debug -d 'Also log every watcher event, every frame and why each change wins or loses (TRACE)'
complete -c omirrd -n "__fish_omirrd_using_subcommand check" -s h -l help -d 'Print help'
complete -c omirrd -n "__fish_omirrd_using_subcommand keygen" -l state-dir -d 'Where the key pair, certificate and index live' -r -F
complete -c omirrd -n "__fish_omirrd_using_subcommand keygen" -s h -l help -d 'Print help'
complete -c omirrd -n "__fish_omirrd_using_subcommand id" -l state-dir -d 'Where the key pair, certificate and index live' -r -F
complete -c omirrd -n "__fish_omirrd_using_subcommand id" -s h -l help -d 'Print help'
complete -c omirrd -n "__fish_omirrd_using_subcommand completions" -s h -l help -d 'Print help'
complete -c omirrd -n "__fish_omirrd_using_subcommand status" -l state-dir -d 'Where the key pair, certificate and index live' -r -F
complete -c omirrd -n "__fish_omirrd_using_subcommand status" -l json -d 'Print the status as one JSON object (schema: omirrd(8))'
complete -c omirrd -n "__fish_omirrd_using_subcommand status" -l prometheus -d 'Print the status as metrics in the Prometheus text format, for node_exporter\'s textfile collector'
complete -c omirrd -n "__fish_omirrd_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c omirrd -n "__fish_omirrd_using_subcommand verify" -l state-dir -d 'Where the key pair, certificate and index live' -r -F
complete -c omirrd -n "__fish_omirrd_using_subcommand verify" -l deep -d 'Also re-read this host\'s files against its index: kind, size, mode, mtime and content (re-hashed) of every file, symlink targets, directories'
complete -c omirrd -n "__fish_omirrd_using_subcommand verify" -l json -d 'Print the result as one JSON object (schema: omirrd(8))'
complete -c omirrd -n "__fish_omirrd_using_subcommand verify" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c omirrd -n "__fish_omirrd_using_subcommand demo" -l config -d 'The Distfile [without --config, /etc/omirrd.conf is read if only it exists]' -r -F
complete -c omirrd -n "__fish_omirrd_using_subcommand demo" -l peers -d 'The peers file: how to reach and recognise each host' -r -F
complete -c omirrd -n "__fish_omirrd_using_subcommand demo" -l host -d 'This host\'s name in the Distfile and the peers file [default: the machine\'s host name]' -r
complete -c omirrd -n "__fish_omirrd_using_subcommand demo" -l root -d 'Resolve every absolute Distfile path under DIR on this host' -r -F
complete -c omirrd -n "__fish_omirrd_using_subcommand demo" -l state-dir -d 'Where the key pair, certificate and index live' -r -F
complete -c omirrd -n "__fish_omirrd_using_subcommand demo" -l in-flight -d 'File content that may be in flight from each peer at once: fetched ahead, or queued for the file being written. Takes K, M and G suffixes (powers of 1024)' -r
complete -c omirrd -n "__fish_omirrd_using_subcommand demo" -l max-clock-offset -d 'The most another host\'s wall clock may differ from this host\'s: a peer further off is refused, and a change stamped further ahead than this is set aside. Seconds, or with an s, m or h suffix' -r
complete -c omirrd -n "__fish_omirrd_using_subcommand demo" -l tombstone-horizon -d 'How long a deletion is remembered (its tombstone kept): a host away for longer reconciles with its peers when it comes back (see docs/sync-model.md, "Tombstone expiry"). Expiry runs at start and every hour (or every TIME, if shorter). Seconds, or with an s, m, h or d suffix; "never" keeps tombstones for ever' -r
complete -c omirrd -n "__fish_omirrd_using_subcommand demo" -s d -d 'Define or override a Distfile variable, as rdist\'s -d. VALUE is empty, one name, or a parenthesised list' -r
complete -c omirrd -n "__fish_omirrd_using_subcommand demo" -s f -l foreground -d 'Stay in the foreground and log to stderr'
complete -c omirrd -n "__fish_omirrd_using_subcommand demo" -s v -l verbose -d 'Also log what moves, per peer: changes, files fetched and served, actions applied (DEBUG). -vv is -D'
complete -c omirrd -n "__fish_omirrd_using_subcommand demo" -s D -l debug -d 'Also log every watcher event, every frame and why each change wins or loses (TRACE)'
complete -c omirrd -n "__fish_omirrd_using_subcommand demo" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c omirrd -n "__fish_omirrd_using_subcommand help; and not __fish_seen_subcommand_from check keygen id completions status verify demo help" -f -a "check" -d 'Validate the Distfile and the peers file and show what this host mirrors with whom. Exits 0 only if there is no error'
complete -c omirrd -n "__fish_omirrd_using_subcommand help; and not __fish_seen_subcommand_from check keygen id completions status verify demo help" -f -a "keygen" -d 'Create this host\'s key pair and certificate in the state directory and print its fingerprint'
complete -c omirrd -n "__fish_omirrd_using_subcommand help; and not __fish_seen_subcommand_from check keygen id completions status verify demo help" -f -a "id" -d 'Print this host\'s fingerprint, in the form the peers file takes'
complete -c omirrd -n "__fish_omirrd_using_subcommand help; and not __fish_seen_subcommand_from check keygen id completions status verify demo help" -f -a "completions" -d 'Print the shell completion script for SHELL on standard output'
complete -c omirrd -n "__fish_omirrd_using_subcommand help; and not __fish_seen_subcommand_from check keygen id completions status verify demo help" -f -a "status" -d 'Show the running daemon\'s peers (connected or not, since when, changes and frames each way, queue, last error) and local counters, read from its status socket in the state directory'
complete -c omirrd -n "__fish_omirrd_using_subcommand help; and not __fish_seen_subcommand_from check keygen id completions status verify demo help" -f -a "verify" -d 'Ask the running daemon whether this host and each peer hold the same tree: it compares its index with every peer\'s, mirrored tree by mirrored tree, and lists every path that differs with both hosts\' versions'
complete -c omirrd -n "__fish_omirrd_using_subcommand help; and not __fish_seen_subcommand_from check keygen id completions status verify demo help" -f -a "demo" -d 'Try omirr out: run three hosts on this machine that mirror one tree'
complete -c omirrd -n "__fish_omirrd_using_subcommand help; and not __fish_seen_subcommand_from check keygen id completions status verify demo help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
