{{header}}"""Buildbot steps for keel, for the project described by {{project_file}}.

Put this module next to master.cfg and use it there:

    from keel_steps import KeelBuild, KeelExec, keel_steps
    factory = util.BuildFactory([steps.Git(repourl=..., mode='full')] + keel_steps())
    # or one step at a time:
    factory = util.BuildFactory([steps.Git(repourl=..., mode='full'),
                                 KeelBuild('app'), KeelExec('make test')])

Both steps are ShellCommands running on the worker in the build's workdir (the project
checkout, where {{project_file}} is). KeelExec runs the command inside an [env] of the
project as the owner of the checkout, so the files it writes are not root's.
"""
from buildbot import config
from buildbot.steps.shell import ShellCommand

KEEL = {{keel}}
# Image name -> `keel` arguments building it, in dependency order.
IMAGES = [
{{images}}]
ENVS = {{envs}}
DEFAULT_ENV = {{default_env}}
TEST_COMMAND = {{test}}


class KeelBuild(ShellCommand):
    """Builds one image of the project (or every image, in dependency order, if None)."""

    def __init__(self, image=None, keel=KEEL, **kwargs):
        names = [name for name, _ in IMAGES]
        if image is None:
            command = [keel, 'build']
        elif image in names:
            command = [keel] + dict(IMAGES)[image]
        else:
            config.error('KeelBuild: no image %r in {{project_file}}; known: %s'
                         % (image, ', '.join(names)))
            command = [keel, 'build', str(image)]
        kwargs.setdefault('name', 'keel build %s' % (image or 'all'))
        kwargs.setdefault('description', ['building image', image or 'all'])
        kwargs.setdefault('haltOnFailure', True)
        super().__init__(command=command, **kwargs)


class KeelExec(ShellCommand):
    """Runs COMMAND inside an [env] of the project (a string runs under sh -c)."""

    def __init__(self, command=TEST_COMMAND, env=None, keel=KEEL, **kwargs):
        env = env or DEFAULT_ENV
        if env not in ENVS:
            config.error('KeelExec: no env %r in {{project_file}}; known: %s'
                         % (env, ', '.join(ENVS) or '(none)'))
        if isinstance(command, str):
            command = ['sh', '-c', command]
        kwargs.setdefault('name', 'keel exec-in %s' % env)
        kwargs.setdefault('haltOnFailure', True)
        super().__init__(command=[keel, 'exec-in', str(env), '--'] + list(command), **kwargs)


def keel_steps(test_command=TEST_COMMAND, env=None, keel=KEEL, **kwargs):
    """KeelBuild for every image (dependency order), then KeelExec(test_command)."""
    out = [KeelBuild(name, keel=keel, **kwargs) for name, _ in IMAGES]
    if ENVS:
        out.append(KeelExec(test_command, env=env, keel=keel, **kwargs))
    return out
