# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_vm_catalog_global_optspecs
    string join \n socket= vsock= stream= h/help V/version
end

function __fish_vm_catalog_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_vm_catalog_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_vm_catalog_using_subcommand
    set -l cmd (__fish_vm_catalog_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c vm-catalog -n "__fish_vm_catalog_needs_command" -l socket -d 'The daemon\'s socket on the host' -r -F
complete -c vm-catalog -n "__fish_vm_catalog_needs_command" -l vsock -d 'Inside a UI VM: reach the daemon over vsock, on PORT of the host (CID 2) or of CID (the daemon\'s default port is 22083)' -r
complete -c vm-catalog -n "__fish_vm_catalog_needs_command" -l stream -d 'On the host: a UI VM\'s stream socket (VM-DIR/NAME/vsock_PORT), as the VMM connects to it for the guest; shows what that VM sees' -r -F
complete -c vm-catalog -n "__fish_vm_catalog_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c vm-catalog -n "__fish_vm_catalog_needs_command" -s V -l version -d 'Print version'
complete -c vm-catalog -n "__fish_vm_catalog_needs_command" -f -a "list" -d 'List VMs (active ones; --all adds shadowed, rejected and unavailable definitions)'
complete -c vm-catalog -n "__fish_vm_catalog_needs_command" -f -a "show" -d 'Everything about one VM: state, files, providers, diagnostics, and the definitions of the same name it shadows (or that shadow it)'
complete -c vm-catalog -n "__fish_vm_catalog_needs_command" -f -a "resolve" -d 'Print the service (s6-rc service or s6 instance) of a startable VM (exit 3 if the VM is unknown, rejected or unavailable). For scripts such as vm-start'
complete -c vm-catalog -n "__fish_vm_catalog_needs_command" -f -a "sources" -d 'List the sources of definitions, in precedence order'
complete -c vm-catalog -n "__fish_vm_catalog_needs_command" -f -a "status" -d 'The daemon\'s status: versions, generation, last rescan and apply'
complete -c vm-catalog -n "__fish_vm_catalog_needs_command" -f -a "rescan" -d 'Rescan every source now (root or the admin group) and print the changes'
complete -c vm-catalog -n "__fish_vm_catalog_needs_command" -f -a "watch" -d 'Print changes as they happen, one per line; survives daemon restarts'
complete -c vm-catalog -n "__fish_vm_catalog_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand list" -l source -d 'Only definitions from this source' -r
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand list" -l socket -d 'The daemon\'s socket on the host' -r -F
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand list" -l vsock -d 'Inside a UI VM: reach the daemon over vsock, on PORT of the host (CID 2) or of CID (the daemon\'s default port is 22083)' -r
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand list" -l stream -d 'On the host: a UI VM\'s stream socket (VM-DIR/NAME/vsock_PORT), as the VMM connects to it for the guest; shows what that VM sees' -r -F
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand list" -l all -d 'Every definition, with the reason it is not active'
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand list" -l json -d 'JSON: {"epoch", "generation", "vms": [...]}'
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand list" -s h -l help -d 'Print help'
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand show" -l socket -d 'The daemon\'s socket on the host' -r -F
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand show" -l vsock -d 'Inside a UI VM: reach the daemon over vsock, on PORT of the host (CID 2) or of CID (the daemon\'s default port is 22083)' -r
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand show" -l stream -d 'On the host: a UI VM\'s stream socket (VM-DIR/NAME/vsock_PORT), as the VMM connects to it for the guest; shows what that VM sees' -r -F
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand show" -l json -d 'JSON: {"epoch", "generation", "vm": {...}, "others": [...]}'
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand show" -s h -l help -d 'Print help'
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand resolve" -l socket -d 'The daemon\'s socket on the host' -r -F
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand resolve" -l vsock -d 'Inside a UI VM: reach the daemon over vsock, on PORT of the host (CID 2) or of CID (the daemon\'s default port is 22083)' -r
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand resolve" -l stream -d 'On the host: a UI VM\'s stream socket (VM-DIR/NAME/vsock_PORT), as the VMM connects to it for the guest; shows what that VM sees' -r -F
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand resolve" -l with-providers -d 'First print the services of its network providers, transitively, each before the VMs it provides for (one per line): the order to start s6 instances in'
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand resolve" -s h -l help -d 'Print help'
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand sources" -l socket -d 'The daemon\'s socket on the host' -r -F
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand sources" -l vsock -d 'Inside a UI VM: reach the daemon over vsock, on PORT of the host (CID 2) or of CID (the daemon\'s default port is 22083)' -r
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand sources" -l stream -d 'On the host: a UI VM\'s stream socket (VM-DIR/NAME/vsock_PORT), as the VMM connects to it for the guest; shows what that VM sees' -r -F
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand sources" -l json -d 'JSON: {"epoch", "generation", "sources": [...]}'
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand sources" -s h -l help -d 'Print help'
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand status" -l socket -d 'The daemon\'s socket on the host' -r -F
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand status" -l vsock -d 'Inside a UI VM: reach the daemon over vsock, on PORT of the host (CID 2) or of CID (the daemon\'s default port is 22083)' -r
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand status" -l stream -d 'On the host: a UI VM\'s stream socket (VM-DIR/NAME/vsock_PORT), as the VMM connects to it for the guest; shows what that VM sees' -r -F
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand status" -l json -d 'JSON: {"server_version", "protocol_version", "epoch", "generation", "applier", "sources": [...], "last_rescan", "last_apply", ...}'
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand status" -s h -l help -d 'Print help'
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand rescan" -l socket -d 'The daemon\'s socket on the host' -r -F
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand rescan" -l vsock -d 'Inside a UI VM: reach the daemon over vsock, on PORT of the host (CID 2) or of CID (the daemon\'s default port is 22083)' -r
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand rescan" -l stream -d 'On the host: a UI VM\'s stream socket (VM-DIR/NAME/vsock_PORT), as the VMM connects to it for the guest; shows what that VM sees' -r -F
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand rescan" -l dry-run -d 'Compute the changes only; apply and publish nothing'
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand rescan" -l json -d 'JSON object with the outcome and the changes'
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand rescan" -s h -l help -d 'Print help'
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand watch" -l since -d 'Resume from EPOCH:GENERATION (as printed by `status`)' -r
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand watch" -l socket -d 'The daemon\'s socket on the host' -r -F
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand watch" -l vsock -d 'Inside a UI VM: reach the daemon over vsock, on PORT of the host (CID 2) or of CID (the daemon\'s default port is 22083)' -r
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand watch" -l stream -d 'On the host: a UI VM\'s stream socket (VM-DIR/NAME/vsock_PORT), as the VMM connects to it for the guest; shows what that VM sees' -r -F
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand watch" -l json -d 'One JSON object per line, each with "event" and "generation" (and "name" for VM events)'
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand watch" -s h -l help -d 'Print help'
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand help; and not __fish_seen_subcommand_from list show resolve sources status rescan watch help" -f -a "list" -d 'List VMs (active ones; --all adds shadowed, rejected and unavailable definitions)'
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand help; and not __fish_seen_subcommand_from list show resolve sources status rescan watch help" -f -a "show" -d 'Everything about one VM: state, files, providers, diagnostics, and the definitions of the same name it shadows (or that shadow it)'
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand help; and not __fish_seen_subcommand_from list show resolve sources status rescan watch help" -f -a "resolve" -d 'Print the service (s6-rc service or s6 instance) of a startable VM (exit 3 if the VM is unknown, rejected or unavailable). For scripts such as vm-start'
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand help; and not __fish_seen_subcommand_from list show resolve sources status rescan watch help" -f -a "sources" -d 'List the sources of definitions, in precedence order'
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand help; and not __fish_seen_subcommand_from list show resolve sources status rescan watch help" -f -a "status" -d 'The daemon\'s status: versions, generation, last rescan and apply'
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand help; and not __fish_seen_subcommand_from list show resolve sources status rescan watch help" -f -a "rescan" -d 'Rescan every source now (root or the admin group) and print the changes'
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand help; and not __fish_seen_subcommand_from list show resolve sources status rescan watch help" -f -a "watch" -d 'Print changes as they happen, one per line; survives daemon restarts'
complete -c vm-catalog -n "__fish_vm_catalog_using_subcommand help; and not __fish_seen_subcommand_from list show resolve sources status rescan watch help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
