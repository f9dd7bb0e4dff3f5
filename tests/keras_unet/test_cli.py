from keras_unet import cli


def test_help_lists_every_command(capsys):
    parser = cli.build_parser()
    help_text = parser.format_help()
    for name in cli.COMMANDS:
        assert name in help_text


def test_info_prints_versions_and_devices(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "keras-unet 0." in out and "keras " in out
    assert "device:" in out and "CPU" in out


def test_no_command_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "usage: keras-unet" in capsys.readouterr().out
