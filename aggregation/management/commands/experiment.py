"""`python manage.py experiment list|show|pause|stop|resume|start|reset`: an experiment's run from the command line."""
import json
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from aggregation.management.commands.createexperiment import experiment_description
from aggregation.models import Experiment
from aggregation.services.lifecycle import experiment_pause, experiment_reset, experiment_resume, experiment_stop
from fedsite.errors import ApplicationError


class Command(BaseCommand):
    help = ("Operate experiments: list them, show one, pause, stop or resume its run, or reset it to an earlier model "
            "version (a rollback, recorded in the lineage). `experiment create` is `createexperiment`.")

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list", help="Every experiment with its status and latest model version.")
        for action, text in (("show", "Its model, strategy, rounds and latest model version."),
                             ("pause", "Hold the run: the open round ends, nodes wait until it resumes."),
                             ("stop", "End the run now; nodes finish with the latest model and exit."),
                             ("resume", "Run a paused or stopped experiment again from its latest model."),
                             ("start", "The same as resume.")):
            sub.add_parser(action, help=text).add_argument("name")
        reset = sub.add_parser("reset", help="Roll back: a new version with version V's parameters, and a new round.")
        reset.add_argument("name")
        reset.add_argument("--to", type=int, required=True, metavar="V", help="The model version to go back to.")
        create = sub.add_parser("create", help="Same as `createexperiment` (see its --help).")
        create.add_argument("args", nargs="*")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "create":
            call_command("createexperiment", *options["args"], stdout=self.stdout)
            return
        if action == "list":
            for e in Experiment.objects.order_by("name"):
                latest = e.versions.order_by("-version").values_list("version", flat=True).first()
                self.stdout.write(f"{e.name:<24} {e.status:<12} {e.strategy:<14} model "
                                  f"{'v' + str(latest) if latest is not None else '-'}")
            return
        experiment = Experiment.objects.filter(name=options["name"]).first()
        if experiment is None:
            raise CommandError(f"there is no experiment named {options['name']!r} (see `manage.py experiment list`)")
        try:
            if action == "show":
                self.stdout.write(experiment_description(experiment))
                rounds = experiment.rounds.order_by("-number").first()
                if rounds is not None:
                    self.stdout.write(f"  latest round: {rounds.number} ({rounds.status}); metrics "
                                      f"{json.dumps(rounds.metrics)}")
            elif action == "stop":
                done = experiment_stop(experiment, "stopped with `manage.py experiment stop`")
                self.stdout.write(f"{experiment.name}: {'stopped' if done else 'was not running'}")
            elif action == "pause":
                done = experiment_pause(experiment, "manage.py experiment pause")
                self.stdout.write(f"{experiment.name}: {'paused' if done else 'was not running'}")
            elif action in ("resume", "start"):
                done = experiment_resume(experiment)
                self.stdout.write(f"{experiment.name}: {'running again' if done else 'was running already'}")
            else:
                reset = experiment_reset(experiment, options["to"], by="manage.py experiment reset")
                self.stdout.write(f"{experiment.name}: model v{reset.version} is v{options['to']}'s parameters; "
                                  f"a new round is open on it")
        except ApplicationError as exc:
            raise CommandError(exc.detail) from None
