{{header}}"""SCons tool for keel: build the images of {{project_file}}
and run commands inside its build environments.

Put this file at site_scons/site_tools/keel.py next to your SConstruct (which must sit
next to {{project_file}}), then:

    env = Environment(tools=['default', 'keel'])
    app = env.KeelImage('app')                        # -> .keel/app.iid
    env.KeelExec('test.log', [app], 'make test > test.log')   # inside the default env
    env.KeelExec('lint.ok', [], 'make lint && touch lint.ok', keel_env='dev')

KeelImage's target scanner runs `keel context-files NAME`, so SCons rebuilds an image
exactly when its Dockerfile or a context file (after .dockerignore) changes in content,
or when a file is added or removed.
"""
import os
import shlex
import shutil
import subprocess

import SCons.Builder
import SCons.Errors
import SCons.Scanner

PROJECT_FILE = {{project_file_py}}
# Image name -> `keel` arguments building it (from {{project_file}}).
IMAGES = {
{{images}}}
# Image name -> images of the project it is built on.
DEPENDS_ON = {
{{depends}}}
ENVS = {{envs}}
DEFAULT_ENV = {{default_env}}
# Variables keel reads, passed through SCons' scrubbed environment.
_PASS_ENV = ('KEEL_ROOT', 'KEEL_LOG', 'HOME', 'XDG_DATA_HOME', 'XDG_RUNTIME_DIR')


def _image_name(node):
    return os.path.splitext(node.name)[0]


def _context_scan(node, env, path):
    """Implicit dependencies of .keel/NAME.iid: NAME's context files."""
    name = _image_name(node)
    if name not in IMAGES:
        return []
    cmd = shlex.split(env.subst('$KEEL')) + ['context-files', name]
    top = env.Dir('#').abspath
    try:
        out = subprocess.run(cmd, cwd=top, env=env['ENV'], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, universal_newlines=True)
    except OSError as e:
        raise SCons.Errors.UserError('%s: %s; install keel or set KEEL' % (' '.join(cmd), e))
    if out.returncode != 0:
        raise SCons.Errors.UserError('%s failed: %s' % (' '.join(cmd), out.stderr.strip()))
    return [env.File('#' + f) for f in out.stdout.splitlines() if f]


def _build_command(target, source, env, for_signature):
    name = _image_name(target[0])
    args = ' '.join(shlex.quote(a) for a in IMAGES[name])
    return '$KEEL %s --iidfile ${TARGET}' % args.replace('$', '$$')


def KeelImage(env, name, **kw):
    """Builds image NAME of the project into $KEEL_DIR/NAME.iid (and its bases first)."""
    if name not in IMAGES:
        raise SCons.Errors.UserError('keel: no image %r in %s; known: %s'
                                     % (name, PROJECT_FILE, ', '.join(sorted(IMAGES))))
    target = env._KeelImage('#$KEEL_DIR/%s.iid' % name, '#' + PROJECT_FILE, **kw)
    for dep in DEPENDS_ON[name]:
        env.Depends(target, env.KeelImage(dep))
    env.Alias('image-' + name, target)
    return target


def KeelExec(env, target, source, command, keel_env=None, **kw):
    """Runs COMMAND (a shell line, run by sh inside the env) in an [env] of the project."""
    keel_env = keel_env or DEFAULT_ENV
    if keel_env not in ENVS:
        raise SCons.Errors.UserError('keel: no env %r in %s; known: %s'
                                     % (keel_env, PROJECT_FILE, ', '.join(ENVS)))
    line = '$KEEL exec-in %s -- sh -c %s' % (keel_env, shlex.quote(command).replace('$', '$$'))
    return env.Command(target, source, line, **kw)


def generate(env):
    # $KEEL in the environment (may carry options, e.g. `keel --root DIR`), else keel on PATH.
    env.SetDefault(KEEL=os.environ.get('KEEL') or shutil.which('keel') or 'keel',
                   KEEL_DIR='.keel')
    for var in _PASS_ENV:
        if var in os.environ:
            env['ENV'][var] = os.environ[var]
    env['ENV']['PATH'] = os.environ.get('PATH', env['ENV'].get('PATH', ''))
    builder = SCons.Builder.Builder(
        generator=_build_command,
        target_scanner=SCons.Scanner.Scanner(function=_context_scan, name='KeelContext'),
    )
    env.Append(BUILDERS={'_KeelImage': builder})
    env.AddMethod(KeelImage, 'KeelImage')
    env.AddMethod(KeelExec, 'KeelExec')


def exists(env):
    return env.Detect('keel')
