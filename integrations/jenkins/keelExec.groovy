{{header}}// Shared-library step (vars/keelExec.groovy): run a shell command inside an [env] of
// keel.toml, as the owner of the workspace (files it writes are never root's):
//   keelExec(env: 'dev', command: 'make test')
def call(Map args = [:]) {
    String keel = args.keel ?: (env.KEEL ?: 'keel')
    String envName = args.env ?: 'dev'
    String command = args.command
    if (!command) {
        error('keelExec: give the command to run, e.g. keelExec(env: \'dev\', command: \'make test\')')
    }
    String quoted = "'" + command.replace("'", "'\\''") + "'"
    dir(args.dir ?: '.') {
        sh(label: "keel exec-in ${envName}", script: "\"${keel}\" exec-in '${envName}' -- sh -c ${quoted}")
    }
}
