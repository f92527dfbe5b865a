from slt_deploy.cli import main

main()
