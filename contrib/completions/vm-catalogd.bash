_vm__catalogd() {
    local i cur prev opts cmd
    COMPREPLY=()
    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
        cur="$2"
    else
        cur="${COMP_WORDS[COMP_CWORD]}"
    fi
    prev="$3"
    cmd=""
    opts=""

    for i in "${COMP_WORDS[@]:0:COMP_CWORD}"
    do
        case "${cmd},${i}" in
            ",$1")
                cmd="vm__catalogd"
                ;;
            vm__catalogd,check)
                cmd="vm__catalogd__subcmd__check"
                ;;
            vm__catalogd,help)
                cmd="vm__catalogd__subcmd__help"
                ;;
            vm__catalogd__subcmd__help,check)
                cmd="vm__catalogd__subcmd__help__subcmd__check"
                ;;
            vm__catalogd__subcmd__help,help)
                cmd="vm__catalogd__subcmd__help__subcmd__help"
                ;;
            *)
                ;;
        esac
    done

    case "${cmd}" in
        vm__catalogd)
            opts="-h -V --socket --socket-fd --socket-mode --socket-group --admin-group --max-connections --max-connections-per-uid --ui-vm --vsock-port --ui-vm-socket --ui-vm-socket-mode --max-connections-per-vm --max-calls-per-vm --ui-vm-socket-owner --ui-vm-socket-group --builtin --source --trusted-source --trusted-target --names --allow-cross-source-providers --no-watch --debounce-ms --no-partitions --partition-disk --all-disks --ext --cmdline --fsck --uevent-group --sysfs --apply --live --scandir --prefix --s6rc-bindir --service-template --start-command --restart-changed --instance-service --instances-up --instance-bindir --program-timeout --max-services --vm-dir --vm-layout --vm-hook --vm-hook-timeout --state-dir --notify-fd --log-level --log-format --help --version check help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 1 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --socket)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --socket-fd)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --socket-mode)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --socket-group)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --admin-group)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --max-connections)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --max-connections-per-uid)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --ui-vm)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --vsock-port)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --ui-vm-socket)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --ui-vm-socket-mode)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --max-connections-per-vm)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --max-calls-per-vm)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --ui-vm-socket-owner)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --ui-vm-socket-group)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --builtin)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --source)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --trusted-source)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --trusted-target)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --names)
                    COMPREPLY=($(compgen -W "plain qualified" -- "${cur}"))
                    return 0
                    ;;
                --debounce-ms)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --partition-disk)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --ext)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --cmdline)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --uevent-group)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --sysfs)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --apply)
                    COMPREPLY=($(compgen -W "s6-rc s6-instance none" -- "${cur}"))
                    return 0
                    ;;
                --live)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --scandir)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --prefix)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --s6rc-bindir)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --service-template)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --start-command)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --instance-service)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --instance-bindir)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --program-timeout)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --max-services)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --vm-dir)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --vm-layout)
                    COMPREPLY=($(compgen -W "plain spectrum" -- "${cur}"))
                    return 0
                    ;;
                --vm-hook)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --vm-hook-timeout)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --state-dir)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --notify-fd)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --log-level)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --log-format)
                    COMPREPLY=($(compgen -W "text json" -- "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__catalogd__subcmd__check)
            opts="-h --json --sources --trusted-source --names --allow-cross-source-providers --trusted-target --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --trusted-source)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --names)
                    COMPREPLY=($(compgen -W "plain qualified" -- "${cur}"))
                    return 0
                    ;;
                --trusted-target)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__catalogd__subcmd__help)
            opts="check help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__catalogd__subcmd__help__subcmd__check)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vm__subcmd__catalogd__subcmd__help__subcmd__help)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
    esac
}

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _vm__catalogd -o nosort -o bashdefault -o default vm-catalogd
else
    complete -F _vm__catalogd -o bashdefault -o default vm-catalogd
fi
