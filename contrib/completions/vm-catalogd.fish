# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_vm_catalogd_global_optspecs
    string join \n socket= socket-fd= socket-mode= socket-group= admin-group= max-connections= max-connections-per-uid= ui-vm= vsock-port= ui-vm-socket= ui-vm-socket-mode= max-connections-per-vm= max-calls-per-vm= ui-vm-socket-owner= ui-vm-socket-group= builtin= source= trusted-source= trusted-target= names= allow-cross-source-providers no-watch debounce-ms= no-partitions partition-disk= all-disks ext= cmdline= fsck uevent-group= sysfs= apply= live= scandir= prefix= s6rc-bindir= service-template= start-command= restart-changed instance-service= instances-up instance-bindir= program-timeout= max-services= vm-dir= vm-layout= vm-hook= vm-hook-timeout= state-dir= notify-fd= log-level= log-format= h/help V/version
end

function __fish_vm_catalogd_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_vm_catalogd_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_vm_catalogd_using_subcommand
    set -l cmd (__fish_vm_catalogd_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l socket -d 'Listen on this SOCK_SEQPACKET socket' -r -F
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l socket-fd -d 'Use this inherited, already listening socket instead of creating one' -r
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l socket-mode -d 'Mode of the socket (octal). Anyone who can connect may list and subscribe; rescans need root or --admin-group' -r
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l socket-group -d 'Group of the socket (name or number)' -r
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l admin-group -d 'Members of this group (name or number) may rescan, besides root' -r
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l max-connections -d 'Open connections in all' -r
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l max-connections-per-uid -d 'Open connections per user' -r
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l ui-vm -d 'Serve this VM as a UI VM: while it is active, listen for its VMM\'s hybrid vsock connections (repeatable; a name as the catalog names it, or a qualified reference LABEL.NAME). A VM peer is read-only and sees no host paths' -r
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l vsock-port -d 'The vsock port UI VMs connect to on the host (CID 2)' -r
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l ui-vm-socket -d 'Where each UI VM\'s listener goes, with {vm-dir}, {name}, {id} and {port}; default {vm-dir}/{name}/vsock_{port} (beside the view), or /run/vsock/{id}/vsock_{port} with --vm-layout spectrum' -r
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l ui-vm-socket-mode -d 'Mode of the UI VM listeners (octal): the VMM\'s user must be able to connect' -r
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l max-connections-per-vm -d 'Open connections of one UI VM (its own: none of the host\'s)' -r
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l max-calls-per-vm -d 'Streaming calls in flight of one UI VM, over all its connections' -r
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l ui-vm-socket-owner -d 'Owner of the UI VM listeners (name or number), or one user per VM with {id} or {name} (Spectrum: vmm-{id}), looked up when the VM\'s listener is made' -r
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l ui-vm-socket-group -d 'Group of the UI VM listeners (name or number)' -r
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l builtin -d 'The built-in VM definitions (trusted: symlinks are followed), labelled `builtin` unless LABEL= is given (Spectrum: sys=/usr/lib/spectrum/vm). A missing directory is an empty source with a warning' -r -F
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l source -d 'An extra untrusted source of definitions (repeatable). Extra sources rank after the built-in one and before partitions, in command-line order' -r
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l trusted-source -d 'An extra trusted source (repeatable; symlinks are followed)' -r
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l trusted-target -d 'In untrusted sources, a symlink counts only if its target is under this prefix (repeatable)' -r -F
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l names -d 'How VMs are named: `plain`, a definition\'s directory name (the highest-precedence definition of a name wins, the others are shadowed), or `qualified`, `<source label>.<directory name>` (Spectrum\'s `sys.netvm`: nothing is shadowed)' -r -f -a "plain\t'A VM\'s name is its directory\'s name; one name, one VM: the highest-precedence definition claims it, the others are shadowed'
qualified\t'A VM\'s name is `<source label>.<directory name>` (`sys.netvm`, `user.nc`), Spectrum\'s naming: names do not collide, nothing is shadowed'"
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l debounce-ms -d 'Wait this long after the last change in a watched directory before rescanning' -r
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l partition-disk -d 'Look for user partitions on this disk only (a name under /sys/class/block, e.g. loop3; repeatable). Default: the disk that holds the root file system' -r
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l ext -d 'The primary user partition (/dev/NAME, NAME, UUID=, PARTUUID=, LABEL=); overrides ext= on the kernel command line' -r
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l cmdline -d 'Where to read ext= from' -r -F
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l uevent-group -d 'Netlink group for block device uevents: 1 is the kernel\'s; mdevd -O rebroadcasts to another' -r
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l sysfs -d 'The sysfs root (for tests)' -r -F
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l apply -d 'How the catalog is applied' -r -f -a "s6-rc\t'One s6-rc database of VM services, compiled and swapped in atomically'
s6-instance\t'Each VM an instance of one templated s6 service (--instance-service)'
none\t'Catalog only: no services'"
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l live -d 'The s6-rc live directory of the VM database' -r -F
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l scandir -d 'The s6-svscan scan directory' -r -F
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l prefix -d 'Prefix of the VM services\' names in the scan directory' -r
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l s6rc-bindir -d 'Where s6-rc-compile, s6-rc-init, s6-rc-update and s6-rc are (default: PATH)' -r -F
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l service-template -d 'A service template directory (@VM_NAME@, @VM_VIEW@ … placeholders); default: a built-in longrun that execs the start command' -r -F
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l start-command -d 'The command a VM service runs, with the VM name as its argument' -r -F
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l instance-service -d 'With --apply s6-instance: the templated service directory (made with s6-instance-maker, supervised); each active VM is one instance of it' -r -F
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l instance-bindir -d 'Where s6-instance-create, -delete, -list, -status and -control are (default: PATH)' -r -F
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l program-timeout -d 'Kill any s6-rc or s6-instance program still running after this many seconds, and report the apply as failed' -r
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l max-services -d 'The most VM services the database may hold' -r
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l vm-dir -d 'Where each active VM\'s view is built' -r -F
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l vm-layout -d 'How views are laid out under --vm-dir: `plain`, `<DIR>/<name>/config`, or `spectrum`, `<DIR>/by-id/<id>/config` with `<DIR>/by-name/<name>` linking to `<DIR>/by-id/<id>` (ids kept in the state directory)' -r -f -a "plain\t'`<vm-dir>/<name>/config`'
spectrum\t'`<vm-dir>/by-id/<id>/config`, and `<vm-dir>/by-name/<name>` linking to `<vm-dir>/by-id/<id>`: Spectrum\'s `/run/vm`'"
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l vm-hook -d 'A program run for each VM, libvirt\'s way: `PROGRAM prepare ID NAME` once its view exists and before its service is created, `PROGRAM release ID NAME` after its service is deleted and before its directory goes; VM_ID, VM_NAME, VM_SOURCE, VM_SOURCE_ROOT, VM_PATH, VM_DIR and VM_VIEW in its environment. A VM whose prepare fails is left out (hook-failed) and tried again' -r -F
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l vm-hook-timeout -d 'Kill a --vm-hook run (with its process group) still running after this many seconds, and count it as failed' -r
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l state-dir -d 'State: compiled databases, partition mount points, VM ids' -r -F
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l notify-fd -d 'Write a newline to this file descriptor once the socket listens and the first scan and apply are done (s6 readiness notification)' -r
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l log-level -d 'Log filter: a level (error, warn, info, debug, trace) or RUST_LOG-style directives; RUST_LOG wins when set' -r
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l log-format -d 'Log format' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l allow-cross-source-providers -d 'Let a VM of an untrusted source use a VM of another untrusted source as its provider (by default only VMs of trusted sources and of its own source: a stick\'s "netvm" cannot carry another partition\'s VMs\' traffic; such a VM is rejected with `provider-untrusted`)'
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l no-watch -d 'Do not watch source directories (rescan only on request, SIGHUP or hotplug)'
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l no-partitions -d 'Do not look for user partitions'
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l all-disks -d 'Look for user partitions on every disk'
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l fsck -d 'Run `fsck -p` on a partition before mounting it'
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l restart-changed -d 'Restart running VMs whose definition changed (default: mark them restart-pending)'
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -l instances-up -d 'With --apply s6-instance: start a new instance at once, as vm-import does (default: created down)'
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -s V -l version -d 'Print version'
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -f -a "check" -d 'Validate VM definition directories offline, as an untrusted source would be read'
complete -c vm-catalogd -n "__fish_vm_catalogd_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vm-catalogd -n "__fish_vm_catalogd_using_subcommand check" -l trusted-source -d 'A trusted source root (symlinks followed), merged before the DIRs, as the daemon\'s built-in and trusted sources are (repeatable; implies --sources)' -r
complete -c vm-catalogd -n "__fish_vm_catalogd_using_subcommand check" -l names -d 'With --sources: how VMs are named, as the daemon\'s --names (`qualified`: `<label>.<directory name>`)' -r -f -a "plain\t'A VM\'s name is its directory\'s name; one name, one VM: the highest-precedence definition claims it, the others are shadowed'
qualified\t'A VM\'s name is `<source label>.<directory name>` (`sys.netvm`, `user.nc`), Spectrum\'s naming: names do not collide, nothing is shadowed'"
complete -c vm-catalogd -n "__fish_vm_catalogd_using_subcommand check" -l trusted-target -d 'A symlink is accepted when its target is under this prefix (repeatable)' -r -F
complete -c vm-catalogd -n "__fish_vm_catalogd_using_subcommand check" -l json -d 'Print one JSON object (see --help) instead of text'
complete -c vm-catalogd -n "__fish_vm_catalogd_using_subcommand check" -l sources -d 'Each DIR is a source root ([LABEL=]DIR) holding definition directories, not a definition directory itself; the roots are merged as the daemon merges its sources'
complete -c vm-catalogd -n "__fish_vm_catalogd_using_subcommand check" -l allow-cross-source-providers -d 'With --sources: let a VM of one DIR use another DIR\'s VM as its provider, as the daemon\'s --allow-cross-source-providers (by default only trusted sources\' VMs and its own DIR\'s: `provider-untrusted`)'
complete -c vm-catalogd -n "__fish_vm_catalogd_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c vm-catalogd -n "__fish_vm_catalogd_using_subcommand help; and not __fish_seen_subcommand_from check help" -f -a "check" -d 'Validate VM definition directories offline, as an untrusted source would be read'
complete -c vm-catalogd -n "__fish_vm_catalogd_using_subcommand help; and not __fish_seen_subcommand_from check help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
